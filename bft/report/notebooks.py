"""Execute a report notebook headless (nbclient), with parameters injected into its "parameters" cell."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat

RESULTS_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "results.ipynb"
PARAMETERS_TAG = "parameters"


def parameters_source(params: Mapping[str, Any]) -> str:
    """Python assignments for ``params`` (values must round-trip through ``repr``: str, numbers, lists, dicts)."""
    return "\n".join(f"{name} = {value!r}" for name, value in params.items()) + "\n"


def inject_parameters(nb: nbformat.NotebookNode, params: Mapping[str, Any]) -> nbformat.NotebookNode:
    """Replace the source of the cell tagged "parameters" by ``params``' assignments (in place; returns ``nb``)."""
    for cell in nb.cells:
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            cell.source = parameters_source(params)
            return nb
    raise ValueError(f"notebook has no cell tagged {PARAMETERS_TAG!r}")


def run_notebook(
    path: str | Path = RESULTS_NOTEBOOK,
    params: Mapping[str, Any] | None = None,
    cwd: str | Path = ".",
    output: str | Path | None = None,
    timeout: int = 600,
    kernel_name: str = "python3",
) -> nbformat.NotebookNode:
    """Run ``path`` with ``params`` in ``cwd``; the executed copy is written to ``output`` when given.

    Raises ``nbclient.exceptions.CellExecutionError`` when a cell fails (the executed copy is still written).
    """
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    if params:
        inject_parameters(nb, params)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    finally:
        if output is not None:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(output))
    return nb
