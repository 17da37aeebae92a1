"""Every third-party package that bft/ imports is declared in pyproject.toml (dependencies or an extra)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def top_level_imports(root: Path) -> dict[str, str]:
    """Top-level module name -> first file importing it (absolute imports only)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project.get("optional-dependencies", {}).values() for s in extra]
    return {_normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared():
    module_to_dists = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = []
    for module, where in top_level_imports(REPO / "bft").items():
        if module == "bft" or module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {_normalise(d) for d in module_to_dists.get(module, [])}
        if not dists and _normalise(module) in declared:
            continue  # an optional extra that is not installed here (vllm), declared under its own name
        if not dists:
            missing.append(f"{module} (imported in {where}) is not installed, so no distribution can be checked")
        elif not dists & declared:
            missing.append(f"{module} (imported in {where}) comes from {sorted(dists)}, not declared in pyproject.toml")
    assert not missing, "\n".join(missing)


def test_the_scan_sees_imports(tmp_path):
    """The scanner itself: a module importing an undeclared package is reported."""
    (tmp_path / "m.py").write_text("import numpy\nfrom yaml import safe_load\nfrom . import sibling\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        assert set(top_level_imports(tmp_path)) == {"numpy", "yaml"}
    finally:
        REPO = saved


def test_every_dependency_has_an_upper_bound():
    """The next torch / transformers / ... release cannot silently become a supported one: every range is bounded."""
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project.get("optional-dependencies", {}).values() for s in extra]
    unbounded = [s for s in specs if not any(c.operator in ("<", "<=", "==", "~=") for c in Requirement(s).specifier)]
    assert not unbounded, f"no upper bound: {unbounded}"
    assert not any(Requirement(s).name == "datasketch" for s in project["dependencies"])  # only the tests' oracle uses it
