"""Whether this interpreter already has everything ``pip install -e ".[EXTRA,...]"`` would install: the build system's
and the project's requirements from pyproject.toml, the named extras', and their own requirements, recursively
(markers evaluated, extras followed). Exit 0 if so; else 1, naming the first requirement not met.

``make setup`` then installs bft alone (``pip install --no-deps --no-build-isolation -e .``, 7 s here) instead of
letting pip's resolver confirm the same (31 s). Usage: ``python .ci/requirements_met.py [EXTRA ...]``."""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})


def first_unmet(requirements: list[str], extras: frozenset[str] = frozenset()) -> str | None:
    """The first requirement (or a requirement of one) that is not installed at an accepted version, else None."""
    todo = [(Requirement(text), extras) for text in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, context = todo.pop()
        if not _applies(req, context):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            return f"{req} (not installed)"
        if not req.specifier.contains(dist.version, prereleases=True):
            return f"{req} (installed: {dist.version})"
        todo += [(Requirement(text), frozenset(req.extras)) for text in dist.requires or []]
    return None


def main(extras: list[str]) -> int:
    project = tomllib.loads(PYPROJECT.read_text())
    requirements = list(project["build-system"]["requires"]) + list(project["project"]["dependencies"])
    optional = project["project"].get("optional-dependencies", {})
    for extra in extras:
        requirements += optional[extra]
    unmet = first_unmet(requirements)
    if unmet:
        print(f"requirements_met: {unmet}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
