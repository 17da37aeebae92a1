"""Which paper row a run sits beside: the run's settings, compared with every setting a paper row declares.

Pure functions of a run's fields (one row of :func:`bft.report.load.load_runs`). A run sits beside a paper row only
when every setting the row declares (:class:`bft.eval.paper_rows.RowSettings`: method, generated pairs, seed pairs,
corpus, final-model size, eval set, judge, reference, and the tags where the table varies them) matches; otherwise
the first mismatching setting says why not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bft.eval.inference_tags import inference_tag_kind, train_tags_kind
from bft.eval.paper_rows import PAPER_ROWS, SETTING_NAMES, PaperRow, RowSettings
from bft.report.paper_tables import table_of

# Method -> the data recipe it reproduces (BFT's naming).
METHOD_RECIPES: dict[str, str] = {
    "filter_only": "filtering",
    "rewrite_only": "rewriting",
    "backandforth": "filtering + rewriting",
    "distill": "filtering + distilling",
    "humpback": "ClueWeb + filtering",
}

# baseline_file name fragment -> BFT baseline row (first match wins, checked in this order).
BASELINE_ROWS: tuple[tuple[str, str], ...] = (
    ("orca", "Open Orca"),
    ("sharegpt", "ShareGPT"),
    ("evol", "Evol-Instruct"),
    ("alpaca", "Alpaca-GPT4"),
    ("self", "Self-instruct"),
)

# Generated / seed pairs match a paper's count within 1% (the papers round: 41.8K for 41,821; decontamination
# drops a few pairs); a run that fell further short of its target does not match.
SIZE_TOLERANCE = 0.01

# The settings every paper row is defined by (the tags are declared only where a table varies them).
CORE_SETTINGS: tuple[str, ...] = SETTING_NAMES[:8]

SETTING_LABELS: dict[str, str] = {
    "method": "method",
    "data_size": "generated pairs",
    "seed_size": "seed pairs",
    "corpus": "corpus",
    "model_size": "model size",
    "eval_set": "eval set",
    "judge": "judge",
    "reference": "reference",
    "train_tags": "training tags",
    "inference_tag": "inference tag",
}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _number(value: Any) -> float | None:
    if _missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def recipe(method: str | None, baseline_file: str | None = None) -> str | None:
    """The data recipe of a run: 'filtering + rewriting', 'Open Orca', ... (None when unknown)."""
    if method == "baseline_dataset":
        if _missing(baseline_file):
            return None
        name = str(baseline_file).lower().replace("-", "").replace("_", "")
        return next((row for key, row in BASELINE_ROWS if key in name), None)
    return METHOD_RECIPES.get(method or "")


def run_method(run: Mapping[str, Any]) -> str | None:
    """The method a paper row names: the bft method, or ``baseline_dataset:<dataset>`` for a baseline run."""
    method = run.get("method")
    if method == "baseline_dataset":
        dataset = recipe(method, run.get("baseline_file"))
        return f"baseline_dataset:{dataset or run.get('baseline_file') or '?'}"
    return None if _missing(method) else str(method)


def corpus_row(corpus: str | None, bucket: str | None = None) -> str | None:
    """The paper's name of a corpus source ('allenai/c4' -> 'C4'); None for corpora the papers did not use.

    Dolma is 'Dolma head' or 'Dolma middle' by the run's ``corpus.perplexity_bucket`` when recorded, else by the name.
    """
    name = (corpus or "").lower()
    if "c4" in name:
        return "C4"
    if "dolma" in name:
        where = str(bucket).lower() if not _missing(bucket) else name
        return "Dolma middle" if "middle" in where else "Dolma head"
    if "clueweb" in name:
        return "ClueWeb"
    return None


def model_size(model: str | None) -> str | None:
    """'7b', '70b', ... from a model name or hub id; None when the name carries no size."""
    name = (model or "").lower().replace("-", "_")
    for size in ("70b", "65b", "33b", "13b", "7b"):
        if f"_{size}" in name or name.endswith(size) or f"{size}_" in name:
            return size
    return None


def final_model(run: Mapping[str, Any]) -> str | None:
    models = run.get("models")
    if isinstance(models, Mapping) and models.get("final"):
        return str(models["final"])
    return None if _missing(run.get("model")) else str(run.get("model"))


def _text(value: Any) -> str | None:
    """A recorded text setting, or None when the summary has none (None or NaN in the runs frame)."""
    return None if _missing(value) else str(value)


@dataclass(frozen=True)
class Pairs:
    """How many pairs a run trained on (summary.json), and how far it fell short of its target."""

    generated: int | None
    seed: int | None
    target: int | None
    shortfall: int | None

    @property
    def label(self) -> str:
        if self.generated is None:
            gen = "? generated"
        elif self.target is not None and self.shortfall:
            gen = f"{self.generated:,} of {self.target:,} generated (short {self.shortfall:,})"
        else:
            gen = f"{self.generated:,} generated"
        return f"{gen} + {self.seed:,} seed" if self.seed is not None else gen


def pairs(run: Mapping[str, Any]) -> Pairs:
    """Generated pairs (``n_generated``), seed pairs (``n_seed``, or ``n_train_pairs`` - generated), the target
    (``target_generated``, else ``data.max_generated``) and the shortfall (recorded, else target - generated)."""

    def count(key: str) -> int | None:
        value = _number(run.get(key))
        return None if value is None else int(value)

    generated, seed, total = count("n_generated"), count("n_seed"), count("n_train_pairs")
    target = count("target_generated") if count("target_generated") is not None else count("max_generated")
    if seed is None and total is not None and generated is not None:
        seed = total - generated
    shortfall = count("shortfall")
    if shortfall is None and target is not None and generated is not None and generated < target:
        shortfall = target - generated
    return Pairs(generated, seed, target, shortfall or None)


def run_settings(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run's value of every setting a paper row can declare (None: not recorded in its summary)."""
    p = pairs(run)
    seed_size = p.seed if p.seed is not None else _number(run.get("seed_size"))
    corpus = run.get("corpus")
    seed_tag, web_tag, asked = (_text(run.get(k)) for k in ("seed_tag", "web_tag", "inference_tag"))
    return {
        "method": run_method(run),
        "data_size": p.generated if p.generated is not None else p.target,
        "seed_size": None if seed_size is None else int(seed_size),
        "corpus": corpus_row(corpus, run.get("corpus_bucket")) or _text(corpus),
        "model_size": model_size(final_model(run)),
        "eval_set": _text(run.get("eval_set")),
        "judge": _text(run.get("annotator")),
        "reference": _text(run.get("reference")),
        "train_tags": None if seed_tag is None and web_tag is None else train_tags_kind(seed_tag, web_tag),
        "inference_tag": None if asked is None else inference_tag_kind(asked, seed_tag, web_tag),
    }


def _size_matches(value: Any, paper: int) -> bool:
    number = _number(value)
    return number is not None and abs(number - paper) <= SIZE_TOLERANCE * paper


def _same(name: str, value: Any, paper: Any) -> bool:
    if name in ("data_size", "seed_size"):
        return _size_matches(value, paper)
    return value == paper


def _shown(name: str, value: Any) -> str:
    if _missing(value):
        return "not recorded"
    if name in ("data_size", "seed_size") and _number(value) is not None:
        return f"{int(_number(value)):,}"  # type: ignore[arg-type]
    return str(value)


@dataclass(frozen=True)
class Mismatch:
    setting: str
    run_value: Any
    paper_value: Any
    detail: str = ""

    def __str__(self) -> str:
        label = SETTING_LABELS[self.setting]
        return f"{label} {_shown(self.setting, self.run_value)}{self.detail} (paper: {_shown(self.setting, self.paper_value)})"


def mismatches(run: Mapping[str, Any], row: RowSettings) -> list[Mismatch]:
    """Every setting ``row`` declares that the run does not share, in the order of :data:`SETTING_NAMES`."""
    ours = run_settings(run)
    out = []
    for name in SETTING_NAMES:
        paper = getattr(row, name)
        if paper is None or _same(name, ours[name], paper):
            continue
        detail = ""
        if name == "data_size":
            p = pairs(run)
            if p.target is not None and p.shortfall and _size_matches(p.target, paper):
                detail = f" of a target {p.target:,} (short {p.shortfall:,})"
        out.append(Mismatch(name, ours[name], paper, detail))
    return out


@dataclass(frozen=True)
class Placement:
    """Where a run goes: beside ``rows`` (all settings match), or not comparable with ``nearest`` (and why)."""

    rows: tuple[PaperRow, ...]
    nearest: PaperRow | None
    why_not: tuple[Mismatch, ...]

    @property
    def comparable(self) -> bool:
        return bool(self.rows)


def place(run: Mapping[str, Any], rows: Sequence[PaperRow] = PAPER_ROWS) -> Placement:
    """The paper rows a run sits beside, or its nearest row of the same method with the settings that differ.

    Nearest: fewest settings that differ or that the row leaves unchecked (of method ... reference: a row that
    states less is not nearer for it); ties go to a table the run's tags name, then to the papers' order.
    A run whose method no paper row has gets neither (``nearest`` None).
    """
    checked = [(row, mismatches(run, row.settings)) for row in rows]
    matched = tuple(row for row, diff in checked if not diff)
    if matched:
        return Placement(matched, None, ())
    method = run_method(run)
    candidates = [(row, diff) for row, diff in checked if row.settings.method == method]
    if not candidates:
        return Placement((), None, ())
    tags = set(run.get("tags") or ())

    def rank(item: tuple[PaperRow, list[Mismatch]]) -> tuple[int, int]:
        row, diff = item
        unchecked = sum(getattr(row.settings, n) is None for n in CORE_SETTINGS)
        return (len(diff) + unchecked, 0 if table_of(row) in tags else 1)

    row, diff = min(candidates, key=rank)  # min keeps the papers' order among equals
    return Placement((), row, tuple(diff))


LOCAL_MODELS = ("smollm2_135m", "tiny")


def scale_of(tags: Sequence[str] | None, model: str | None = None) -> str:
    """'paper' or 'local' from the run's tags; untagged runs of the embedded models are 'local' ('?' otherwise)."""
    tags = tags or ()
    if "paper" in tags:
        return "paper"
    if "local" in tags or model in LOCAL_MODELS:
        return "local"
    return "?"
