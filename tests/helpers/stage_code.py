"""Which bft source files each stage's compute function can reach, and their digest (tests/test_stage_code.py).

The file set of a stage is read from the code, not declared (a declared list goes stale silently):

- in the stage's own module (``bft/pipeline/stages/<module>.py``): the compute function and the module's functions
  and constants it uses, transitively. Only that source is hashed, so editing one stage's compute function does
  not touch its neighbours' digests, and neither does a ``version=`` bump in a Stage declaration;
- from there, whole files: every bft module reachable by imports, at module level or lazily inside a function
  (``TYPE_CHECKING`` blocks left out), each package's ``__init__`` on the way, and the data files of a package whose
  ``__init__`` is reached (``bft/data/embedded/seed.jsonl``: the embedded seed is the seed stage's input).

The static import graph over-approximates what runs (a module imported for one branch counts for all): the safe
side. A change it flags may be result-neutral; re-recording says so. It would miss code reached by name only
(``importlib.import_module("bft.x")``); bft has none (tests/test_stage_code.py checks).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import bft
from bft.pipeline.stage import Stage

BFT = Path(bft.__file__).resolve().parent  # the bft whose stages are imported, so versions and files agree
STAGE_MODULES = ("data", "training", "generation", "rewrite", "evaluation")
DIGESTS = Path(__file__).resolve().parents[1] / "stage_code_digests.json"
RECORD_COMMAND = "python -m tests.record_stage_digests"


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def walk_run(node: ast.AST):
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` blocks (never run)."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        if _is_type_checking(current):
            todo += current.orelse
        else:
            todo += ast.iter_child_nodes(current)


@cache
def _parsed(source: str) -> ast.Module:
    return ast.parse(source)


@cache
def _parsed_imports(source: str) -> tuple[tuple[int, str | None, tuple[tuple[str, str | None], ...]], ...]:
    """Every import statement of ``source`` that runs: (level, module or None for ``import``, (name, asname)...)."""
    found = []
    for node in walk_run(_parsed(source)):
        if isinstance(node, ast.Import):
            found.append((0, None, tuple((a.name, a.asname) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple((a.name, a.asname) for a in node.names)))
    return tuple(found)


@dataclass
class SourceTree:
    """A copy of bft's source: ``root`` is the ``bft`` package folder (a temp copy in the tests that edit it)."""

    root: Path = BFT
    _imports: dict[str, frozenset[str]] = field(default_factory=dict)

    def relative(self, path: Path) -> str:
        return str(Path(self.root.name) / path.relative_to(self.root))

    def module_name(self, path: Path) -> str:
        parts = Path(self.relative(path)).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @cached_property
    def modules(self) -> dict[str, Path]:
        return {self.module_name(p): p for p in sorted(self.root.rglob("*.py"))}

    def with_packages(self, module: str) -> set[str]:
        """``module`` and the packages whose ``__init__`` runs when it is imported."""
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(self.modules)

    def targets(self, level: int, module: str | None, names: tuple[tuple[str, str | None], ...], package: str) -> dict[str, str]:
        """bound name -> the bft module it brings in, for one import statement (``module`` None: ``import a.b``;
        ``package``: the importing module's package, for relative imports). ``from pkg import sub`` brings in
        ``pkg.sub`` when that is a module."""
        out: dict[str, str] = {}
        if module is None:
            for name, asname in names:
                out[asname or name.split(".")[0]] = name
        else:
            base = module
            if level:
                parent = package.split(".")[: len(package.split(".")) - level + 1]
                base = ".".join([*parent, base] if base else parent)
            for name, asname in names:
                sub = f"{base}.{name}"
                out[asname or name] = sub if sub in self.modules else base
        return {name: m for name, m in out.items() if m in self.modules}

    def node_targets(self, node: ast.Import | ast.ImportFrom, package: str) -> dict[str, str]:
        names = tuple((a.name, a.asname) for a in node.names)
        if isinstance(node, ast.Import):
            return self.targets(0, None, names, package)
        return self.targets(node.level, node.module or "", names, package)

    def imports_of(self, module: str) -> frozenset[str]:
        """bft modules ``module`` imports anywhere in its file (module level or lazily), with their packages."""
        if module not in self._imports:
            path = self.modules[module]
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            found: set[str] = set()
            for statement in _parsed_imports(path.read_text()):
                for target in self.targets(*statement, package).values():
                    found |= self.with_packages(target)
            self._imports[module] = frozenset(found - {module})
        return self._imports[module]

    def closure(self, roots: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += self.imports_of(module)
        return seen

    def stage_part(self, module: str, compute: str) -> tuple[str, set[str]]:
        """The source of ``compute`` and of the top-level definitions of its module it uses (transitively), and
        the bft modules that part imports lazily or names from the module's imports."""
        source = self.modules[module].read_text()
        tree = _parsed(source)
        package = module.rpartition(".")[0]
        definitions: dict[str, ast.stmt] = {}
        imported: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                definitions[node.name] = node
                continue
            if isinstance(node, ast.Assign | ast.AnnAssign):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    definitions |= {n.id: node for n in ast.walk(target) if isinstance(n, ast.Name)}
            for inner in walk_run(node):  # module-level imports, also under ``try:`` or ``if``
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    imported |= self.node_targets(inner, package)
        reached: dict[int, ast.stmt] = {}
        roots = self.with_packages(package)
        todo = [compute]
        while todo:
            name = todo.pop()
            if name in imported:
                roots |= self.with_packages(imported[name])
            node = definitions.get(name)
            if node is None or id(node) in reached:
                continue
            reached[id(node)] = node
            for inner in walk_run(node):
                if isinstance(inner, ast.Name):
                    todo.append(inner.id)
                elif isinstance(inner, ast.Import | ast.ImportFrom):
                    for target in self.node_targets(inner, package).values():
                        roots |= self.with_packages(target)
        lines = source.splitlines(keepends=True)
        parts = []
        for node in sorted(reached.values(), key=lambda n: n.lineno):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            parts.append("".join(lines[first - 1 : node.end_lineno]))
        return "".join(parts), roots

    def stage_code(self, stage: Stage) -> StageCode:
        module = stage.compute.__module__
        own, roots = self.stage_part(module, stage.compute.__name__)
        modules = self.closure(roots) - {module}
        files = {self.modules[m] for m in modules}
        for m in modules:  # data files shipped inside a reached package (bft/data/embedded/seed.jsonl)
            path = self.modules[m]
            if path.name == "__init__.py":
                files |= {p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
        return StageCode(self.relative(self.modules[module]), own, tuple(sorted(self.relative(p) for p in files)))

    def file_digest(self, relative: str) -> str:
        return hashlib.sha256((self.root.parent / relative).read_bytes()).hexdigest()


@dataclass(frozen=True)
class StageCode:
    """What a stage's compute reaches: its part of its own module, and the other bft files."""

    module: str  # bft/pipeline/stages/<module>.py
    own: str  # the reached functions and constants of that module, in file order
    files: tuple[str, ...]  # other bft files (``bft/parsers.py``)


def all_stages() -> dict[str, Stage]:
    """Every Stage declaration, by ``<stage name>:<compute function>`` (three declarations write ``rewrite``)."""
    out = {}
    for short in STAGE_MODULES:
        module = importlib.import_module(f"bft.pipeline.stages.{short}")
        for value in vars(module).values():
            if isinstance(value, Stage) and inspect.getmodule(value.compute) is module:
                out[f"{value.name}:{value.compute.__name__}"] = value
    return dict(sorted(out.items()))


def record(tree: SourceTree | None = None) -> dict[str, Any]:
    """The digests file's content for the current code: every reached file's sha256, and per stage its version,
    the sha256 of its own part, its files and one digest over all of them."""
    tree = tree or SourceTree()
    stages: dict[str, Any] = {}
    files: dict[str, str] = {}
    for name, stage in all_stages().items():
        code = tree.stage_code(stage)
        for relative in code.files:
            files.setdefault(relative, tree.file_digest(relative))
        own = hashlib.sha256(code.own.encode()).hexdigest()
        digest = hashlib.sha256(f"{code.module}\0{own}".encode())
        for relative in code.files:
            digest.update(f"\0{relative}\0{files[relative]}".encode())
        entry = {"version": stage.version, "digest": digest.hexdigest(), "module": code.module, "own": own}
        stages[name] = entry | {"files": list(code.files)}
    return {
        "about": f"per stage: its code version and a digest of the bft source its compute reaches; {RECORD_COMMAND}",
        "files": dict(sorted(files.items())),
        "stages": stages,
    }


def load_recorded(path: Path = DIGESTS) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"files": {}, "stages": {}}


def what_changed(old: dict[str, Any], new: dict[str, Any], name: str) -> list[str]:
    """The files (and own part) whose change moved stage ``name``'s digest."""
    before, after = old["stages"][name], new["stages"][name]
    changed = [f"its compute in {after['module']}"] if before.get("own") != after["own"] else []
    for relative in sorted(set(before.get("files", [])) | set(after["files"])):
        if relative not in after["files"]:
            changed.append(f"{relative} (no longer reached)")
        elif relative not in before.get("files", []):
            changed.append(f"{relative} (newly reached)")
        elif old["files"].get(relative) != new["files"][relative]:
            changed.append(relative)
    return changed or ["the digest's make-up"]


@dataclass(frozen=True)
class Change:
    stage: str
    kind: str  # "new", "gone", "code" (digest moved, version kept), "bumped" (version moved), "lowered"
    text: str


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """How the current code (``new``) differs from the recorded (``old``), one entry per stage."""
    out = []
    for name in sorted(set(old["stages"]) | set(new["stages"])):
        if name not in new["stages"]:
            out.append(Change(name, "gone", f"{name}: recorded, but no longer declared"))
            continue
        if name not in old["stages"]:
            out.append(Change(name, "new", f"{name}: a new stage (version {new['stages'][name]['version']}), not recorded"))
            continue
        before, after = old["stages"][name], new["stages"][name]
        if after["version"] < before["version"]:
            out.append(Change(name, "lowered", f"{name}: version {before['version']} -> {after['version']}: versions only go up"))
        elif after["version"] > before["version"]:
            out.append(Change(name, "bumped", f"{name}: version {before['version']} -> {after['version']}, not recorded"))
        elif after["digest"] != before["digest"]:
            files = ", ".join(what_changed(old, new, name))
            out.append(Change(name, "code", f"{name} (version {after['version']}): its code changed: {files}"))
    return out


def advice(found: list[Change]) -> str:
    """One line per change (stages whose code changed through the same files share a line), then what to do."""
    lines = [c.text for c in found if c.kind != "code"]
    by_cause: dict[str, list[str]] = {}
    for change in (c for c in found if c.kind == "code"):
        by_cause.setdefault(change.text.partition("its code changed: ")[2], []).append(change.stage)
    for cause, stages in by_cause.items():
        lines.append(f"changed: {cause}; reached by {', '.join(stages)} (version kept)")
    if by_cause:
        lines.append(
            "If a stage's results change with this code, bump version= in its Stage declaration "
            "(bft/pipeline/stages/*.py; its artifacts and those downstream are recomputed). Then record: "
            f"`{RECORD_COMMAND}`, with `--same-results STAGE...` for the stages whose results do not change "
            "(their artifacts are reused; no names: all of them)."
        )
    elif found:
        lines.append(f"Record: `{RECORD_COMMAND}`")
    return "\n".join(lines)
