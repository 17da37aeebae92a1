"""Which bft made an artifact: its version, and the git commit of its source where it runs from a checkout.

Recorded in every manifest (``manifest["code"]``). A stage's artifact key changes only when the stage's declared
``version`` does (tests/test_stage_code.py keeps versions honest), so an artifact made by other code can be reused on
purpose: the log then says so, naming both (``origin_note``).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[1]  # the bft package folder


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@cache
def code_provenance() -> dict[str, Any]:
    """``{"bft": version, "commit": sha or None, "dirty": whether bft/ differs from the commit (None: no git)}``,
    read once per process (the code a process runs is the code it imported at the start)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        bft_version = version("bft")
    except PackageNotFoundError:
        bft_version = None
    tracked = _git("ls-files", "--error-unmatch", "__init__.py") is not None  # bft's own checkout, not a repo around it
    commit = _git("rev-parse", "HEAD") if tracked else None
    status = _git("status", "--porcelain", "--", ".") if commit else None
    return {"bft": bft_version, "commit": commit or None, "dirty": bool(status) if status is not None else None}


def describe(code: dict[str, Any]) -> str:
    text = f"bft {code.get('bft')}"
    if code.get("commit"):
        text += f" at commit {code['commit'][:12]}" + (" with local changes" if code.get("dirty") else "")
    return text


def origin_note(manifest: dict[str, Any], current: dict[str, Any] | None = None) -> str | None:
    """A line for the log when a reused artifact was made by other code than this run's, else None."""
    current = current or code_provenance()
    made = manifest.get("code")
    if made is None:
        return "made by a bft that did not record its version"
    same_commit = made.get("commit") == current.get("commit") and not made.get("dirty") and not current.get("dirty")
    if made.get("bft") == current.get("bft") and (same_commit or not (made.get("commit") or current.get("commit"))):
        return None
    version = manifest.get("stage_version")
    return f"made by {describe(made)}; this run is {describe(current)}; stage version {version} unchanged"
