"""The train_data stage decontaminates seed pairs and generated pairs against the eval set, and counts both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bft.artifacts.store import Artifact
from bft.pipeline.roles import resolve
from bft.pipeline.stages.data import TRAIN_DATA

EVAL = [
    {"instruction": "Write a haiku about the autumn moon over a quiet lake.", "output": "ref"},
    {"instruction": "Explain how a bicycle gear system changes the effort needed to pedal uphill.", "output": "ref"},
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow  # loads the MiniLM sentence embedder for the embedding check
def test_an_eval_instruction_in_the_seed_set_is_dropped_and_counted(compose_cfg, tmp_path):
    eval_file = _write(tmp_path / "eval.jsonl", EVAL)
    seed = [
        {"id": "s1", "instruction": "  write a HAIKU about the autumn moon over a quiet lake ", "output": "Moon on still water."},
        {"id": "s2", "instruction": "List three uses of baking soda in cleaning.", "output": "Ovens, drains, grout."},
    ]
    generated = [
        {"id": "g1", "source_id": "d1", "instruction": "Describe the water cycle for a ten-year-old.", "output": "Rain..."},
        {"id": "g2", "source_id": "d2", "instruction": "What is the capital city of Australia and why?", "output": "Canberra."},
    ]
    _write(tmp_path / "seed" / "seed.jsonl", seed)
    _write(tmp_path / "gen" / "generated.jsonl", generated)
    upstream = {
        "seed": Artifact("seed", "k1", tmp_path / "seed", {}),
        "generated": Artifact("rewrite", "k2", tmp_path / "gen", {}, exports={"generated": "generated.jsonl"}),
    }
    cfg = resolve(compose_cfg(f"eval.set={eval_file}", "eval.max_instances=null"))
    work = tmp_path / "work"
    work.mkdir()
    out = TRAIN_DATA.compute(TRAIN_DATA.config_slice(cfg), upstream, work)

    counts = out.counts
    assert counts["decontaminated_seed"] == {"exact": 1, "ngram": 0, "embedding": 0}
    assert counts["decontaminated_generated"] == {"exact": 0, "ngram": 0, "embedding": 0}
    assert counts["decontaminated"]["exact"] == 1
    assert (counts["in"], counts["seed"], counts["generated"], counts["out"]) == (4, 1, 2, 3)
    train = [json.loads(line) for line in (work / "train.jsonl").read_text().splitlines()]
    assert [r["origin"] for r in train] == ["seed", "generated", "generated"]
    assert not any("haiku" in r["prompt"].lower() for r in train)
    dropped = [json.loads(line) for line in (work / "decontaminated.jsonl").read_text().splitlines()]
    assert [(d["id"], d["origin"], d["decontam_reason"]) for d in dropped] == [("s1", "seed", "exact")]
