"""Tests for bft.data.seed and the embedded datasets."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bft.config.schema import SeedConfig  # noqa: E402
from bft.data.embedded import embedded_file  # noqa: E402
from bft.data.io import DataError, read_records  # noqa: E402
from bft.data.seed import load_seed, oasst_first_turn_pairs, subsample  # noqa: E402


def _embedded(name: str, required: dict[str, type]) -> list[dict]:
    with resources.as_file(embedded_file(name)) as path:
        return read_records(path, required=required).records


def _msg(mid: str, parent: str | None, role: str, text: str, lang: str = "en", rank: float | None = None, **extra: object) -> dict:
    return {
        "message_id": mid,
        "parent_id": parent,
        "message_tree_id": "t",
        "role": role,
        "text": text,
        "lang": lang,
        "rank": rank,
        "deleted": False,
        "review_result": True,
        **extra,
    }


def test_oasst_first_turn_pairs_tree_logic() -> None:
    rows = [
        _msg("r1", None, "prompter", "How do plants grow?"),
        _msg("a1", "r1", "assistant", "Second best answer.", rank=1.0),
        _msg("a2", "r1", "assistant", "Best answer about plants.", rank=0.0),
        _msg("p2", "a2", "prompter", "Follow-up question?"),
        _msg("a3", "p2", "assistant", "Second-turn reply, must be ignored.", rank=0.0),
        _msg("r2", None, "prompter", "Wie wachsen Pflanzen?", lang="de"),
        _msg("a4", "r2", "assistant", "Antwort.", lang="de", rank=0.0),
        _msg("r3", None, "prompter", "A question whose best answer was deleted"),
        _msg("a5", "r3", "assistant", "Deleted reply", rank=0.0, deleted=True),
        _msg("r4", None, "prompter", "Unranked replies only"),
        _msg("a6", "r4", "assistant", "No rank", rank=None),
        _msg("a7", "r5", "assistant", "Reply listed before its root", rank=0),
        _msg("r5", None, "prompter", "  Order should not matter  "),
    ]
    pairs = oasst_first_turn_pairs(rows, language="en")
    assert [(p["id"], p["instruction"], p["output"]) for p in pairs] == [
        ("oasst1-r1", "How do plants grow?", "Best answer about plants."),
        ("oasst1-r5", "Order should not matter", "Reply listed before its root"),
    ]
    assert [p["id"] for p in oasst_first_turn_pairs(rows, language="de")] == ["oasst1-r2"]


def test_oasst1_seed_reads_a_local_file_in_the_hub_format(tmp_path: Path) -> None:
    rows = [
        _msg("r1", None, "prompter", "How do plants grow?"),
        _msg("a1", "r1", "assistant", "Second best answer.", rank=1.0),
        _msg("a2", "r1", "assistant", "Best answer about plants.", rank=0.0),
        _msg("r2", None, "prompter", "Wie wachsen Pflanzen?", lang="de"),
        _msg("a4", "r2", "assistant", "Antwort.", lang="de", rank=0.0),
    ]
    path = tmp_path / "oasst1_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_seed(SeedConfig(source="oasst1", hub_dataset=str(path)))
    assert [(p["id"], p["instruction"], p["output"]) for p in pairs] == [
        ("oasst1-r1", "How do plants grow?", "Best answer about plants.")
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:1]))
    with pytest.raises(DataError, match="duplicate message_id"):
        load_seed(SeedConfig(source="oasst1", hub_dataset=str(path)))


def test_subsample_is_deterministic_and_ordered() -> None:
    records = [{"id": str(i)} for i in range(20)]
    a = subsample(records, 5, seed=3)
    assert a == subsample(records, 5, seed=3)
    assert a != subsample(records, 5, seed=4)
    assert [int(r["id"]) for r in a] == sorted(int(r["id"]) for r in a)
    assert subsample(records, None, seed=0) == records
    with pytest.raises(DataError, match="larger than the 20 available"):
        subsample(records, 21, seed=0)


def test_load_seed_embedded_and_size() -> None:
    full = load_seed(SeedConfig(), seed=0)
    assert len(full) == 48
    assert len({r["id"] for r in full}) == 48
    small = load_seed(SeedConfig(size=10), seed=7)
    assert small == load_seed(SeedConfig(size=10), seed=7)
    assert len(small) == 10 and {r["id"] for r in small} <= {r["id"] for r in full}
    with pytest.raises(DataError, match="larger than"):
        load_seed(SeedConfig(size=49), seed=0)


def test_load_seed_local_file_renames_fields_and_assigns_stable_ids(tmp_path: Path) -> None:
    rows = [{"prompt": f"Question {i}?", "response": f"Answer number {i}."} for i in range(4)]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(rows))
    cfg = SeedConfig(source=str(path), instruction_field="prompt", output_field="response")
    records = load_seed(cfg, seed=0)
    assert [r["instruction"] for r in records] == [f"Question {i}?" for i in range(4)]
    assert all(r["id"].startswith("mine-") for r in records)
    assert [r["id"] for r in records] == [r["id"] for r in load_seed(cfg, seed=0)]
    assert "prompt" not in records[0]

    path.write_text(json.dumps(rows + [{"prompt": "No answer"}]))
    with pytest.raises(DataError, match=r"mine\.json:item 5: field 'response' is missing"):
        load_seed(cfg)
    assert len(load_seed(cfg, on_error="skip")) == 4
    with pytest.raises(DataError, match="unknown seed source"):
        load_seed(SeedConfig(source=str(tmp_path / "absent.jsonl")))


def test_embedded_files_counts_and_fields() -> None:
    seed = _embedded("seed.jsonl", {"id": str, "instruction": str, "output": str})
    corpus = _embedded("corpus.jsonl", {"id": str, "text": str, "url": str, "source": str})
    evals = _embedded("eval.jsonl", {"instruction": str, "output": str, "generator": str, "dataset": str})
    labels = _embedded("labels.jsonl", {"instruction": str, "output": str, "label": int})
    assert (len(seed), len(corpus), len(evals), len(labels)) == (48, 80, 24, 20)
    assert all(300 <= len(r["output"]) <= 1200 for r in seed)
    assert all(200 <= len(r["output"]) <= 800 for r in evals)
    assert {r["generator"] for r in evals} == {"bft_embedded_reference"}
    assert {r["dataset"] for r in evals} == {"bft_embedded"}
    assert {r["label"] for r in labels} == {0, 1}


def test_eval_instructions_do_not_overlap_seed() -> None:
    seed = {" ".join(r["instruction"].lower().split()) for r in _embedded("seed.jsonl", {"instruction": str})}
    evals = [" ".join(r["instruction"].lower().split()) for r in _embedded("eval.jsonl", {"instruction": str})]
    assert not seed & set(evals)
    seed_words = [s.split() for s in seed]
    for instruction in evals:  # no shared run of 6 words either
        words = instruction.split()
        grams = {tuple(words[i : i + 6]) for i in range(len(words) - 5)}
        for other in seed_words:
            assert not grams & {tuple(other[i : i + 6]) for i in range(len(other) - 5)}, instruction
