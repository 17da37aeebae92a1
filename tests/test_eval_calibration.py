"""Judge calibration and the local judge's direction: tests that fail when the arithmetic or the wiring is wrong.

The judge direction tests use a test-only model double (``FixedChoiceModel`` below, never selectable from the CLI)
behind the real tokenizer of the ``tiny`` model, so alpaca_eval's prompt, order randomisation and parser all run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bft.eval import calibrate as cal
from bft.eval import judges
from bft.eval.calibration import agreement_scores, calibration_figures, length_balanced_index, longer_wins
from bft.eval.cli import main

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

# ---------------------------------------------------------------- arithmetic on a hand-made gold file

# (gold preference, len(output_1), len(output_2), judge preference): 8 pairs, hand-checked figures below.
GOLD = [
    (1.0, 100, 20, 1.0),  # longer won, judge right
    (1.0, 100, 20, 1.0),  # longer won, judge right
    (1.0, 100, 20, 2.0),  # longer won, judge wrong
    (2.0, 100, 20, 2.0),  # shorter won, judge right
    (2.0, 30, 200, 2.0),  # longer won, judge right
    (1.5, 50, 60, 1.0),  # draw, judge picks -> 0.5
    (1.0, 10, 300, 1.0),  # shorter won, judge right
    (2.0, 40, 40, 1.5),  # equal lengths, judge draws -> 0.5
]


def _arrays():
    gold, l1, l2, judge = (np.array(c, dtype=float) for c in zip(*GOLD, strict=True))
    return gold, l1, l2, judge


def test_agreement_longer_wins_and_balanced_subset_by_hand():
    gold, l1, l2, judge = _arrays()
    swapped = np.array([False, True] * 4)
    figs = calibration_figures(judge, gold, l1, l2, swapped, seed=0)
    # judge: 1+1+0+1+1+0.5+1+0.5 = 6 of 8
    assert figs["judge"]["agreement"]["value"] == pytest.approx(6 / 8)
    assert figs["judge"]["agreement"]["n"] == 8
    # longer wins: 1,1,1,0,1,0.5,0,(1.5 vs 2 -> 0.5) = 5 of 8
    assert figs["longer_wins"]["agreement"]["value"] == pytest.approx(5 / 8)
    # balanced: decided with different lengths: 4 longer-won (0,1,2,4), 2 shorter-won (3,6) -> 2 + 2 pairs
    balanced = length_balanced_index(gold, l1, l2, seed=0)
    assert len(balanced) == 4 and {3, 6} <= set(balanced.tolist())
    assert figs["longer_wins"]["length_balanced_agreement"]["value"] == pytest.approx(0.5)
    assert figs["chance"]["agreement"]["value"] == 0.5
    lo, hi = figs["chance"]["agreement"]["ci_low"], figs["chance"]["agreement"]["ci_high"]
    assert hi - lo == pytest.approx(2 * 1.959964 * math.sqrt(0.25 / 8), rel=1e-5)
    # length preference: pairs with a > 30 char gap and a verdict: 0,1,2,3,4,6 -> longer picked in 0,1,4 = 3 of 6
    assert figs["judge"]["length_preference"]["value"] == pytest.approx(3 / 6)
    assert figs["longer_wins"]["length_preference"]["value"] == 1.0
    # position bias: shown order flips odd pairs; verdicts for the first shown: pairs 0, 2(shown 1), 4(no: 2), ...
    shown = np.where(swapped, 3 - judge, judge)
    decided = shown != 1.5
    assert figs["judge"]["position_bias"]["value"] == pytest.approx(float((shown[decided] == 1).mean()))


def test_agreement_penalises_a_draw_against_a_winner_by_half():
    assert agreement_scores(np.array([1.5, 1.49, 1.9]), np.array([2.0, 1.0, 1.0])).tolist() == [0.5, 1.0, 0.0]
    assert longer_wins(np.array([5, 1, 3]), np.array([1, 5, 3])).tolist() == [1.0, 2.0, 1.5]


def test_length_balanced_subset_is_balanced_on_random_data():
    rng = np.random.default_rng(3)
    gold = rng.choice([1.0, 2.0, 1.5], size=300, p=[0.6, 0.35, 0.05])
    l1, l2 = rng.integers(1, 500, 300), rng.integers(1, 500, 300)
    idx = length_balanced_index(gold, l1, l2, seed=1)
    longer_won = (gold[idx] == 1.0) == (l1[idx] > l2[idx])
    assert len(idx) > 50 and longer_won.sum() == (~longer_won).sum()
    assert agreement_scores(longer_wins(l1[idx], l2[idx]), gold[idx]).mean() == 0.5


# ---------------------------------------------------------------- both orders


def _clf_prompt(out_1: str, out_2: str) -> str:
    from bft.eval.annotators import ae2_weighted_scheme

    template = Path(ae2_weighted_scheme()["prompt_template"]).read_text()
    return template.replace("{instruction}", "Say hi").replace("{output_1}", out_1).replace("{output_2}", out_2)


def test_swap_pair_exchanges_the_outputs():
    prompt = _clf_prompt("first answer", 'second """ answer')
    swapped = judges.swap_pair(prompt)
    assert judges.extract_pair(swapped) == ('second """ answer', "first answer")
    assert judges.swap_pair(swapped) == prompt


def test_combine_orders_cancels_position_bias_and_keeps_content_preference():
    always_m = (math.log(0.9), math.log(0.1))
    rec = judges.combine_orders(always_m, always_m)
    tops = {t["token"]: t["logprob"] for t in rec["logprobs"]["content"][0]["top_logprobs"]}
    assert math.exp(tops["m"]) == pytest.approx(0.5)
    # output_1 better in both orders: p(m)=0.8 first, p(M)=0.7 when swapped -> (0.8 + 0.7) / 2
    rec = judges.combine_orders((math.log(0.8), math.log(0.2)), (math.log(0.3), math.log(0.7)))
    tops = {t["token"]: t["logprob"] for t in rec["logprobs"]["content"][0]["top_logprobs"]}
    assert math.exp(tops["m"]) == pytest.approx(0.75)


# ---------------------------------------------------------------- the local judge's direction (model double)


class FixedChoiceModel(torch.nn.Module):
    """TEST ONLY: next-token logits favour ``m`` or ``M``: a fixed token, or the output slot containing ``marker``."""

    def __init__(self, tokenizer, favour: str | None = None, marker: str = "GOOD"):
        super().__init__()
        self.tokenizer, self.favour, self.marker = tokenizer, favour, marker
        self.id_m, self.id_big_m = judges.choice_token_ids(tokenizer)
        self.config = SimpleNamespace(max_position_embeddings=100_000)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep=0):
        """Logits of the last ``logits_to_keep`` positions (0: all), as transformers' causal LMs return them."""
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], len(self.tokenizer))
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row][attention_mask[row].bool()])
            choice = self.favour
            if choice is None:
                second = text.index('"model_identifier": "M"')
                choice = "M" if text.rfind(self.marker) > second else "m"
            logits[row, -1, self.id_m if choice == "m" else self.id_big_m] = 5.0
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


@pytest.fixture
def fake_judge(monkeypatch):
    from bft.models.registry import load_model

    tokenizer = load_model("tiny", dtype="float32").tokenizer

    def install(favour: str | None = None):
        model = FixedChoiceModel(tokenizer, favour)
        monkeypatch.setattr(judges, "_load_judge", lambda *a, **k: SimpleNamespace(model=model, tokenizer=tokenizer))

    return install


def _outputs(n: int, good_model: bool):
    ref = [{"instruction": f"q{i}", "output": ("GOOD " if not good_model else "") + f"ref {i}", "generator": "ref"} for i in range(n)]
    model = [{"instruction": f"q{i}", "output": ("GOOD " if good_model else "") + f"mine {i}", "generator": "m1"} for i in range(n)]
    return model, ref


@pytest.mark.parametrize("orders", [1, 2])
@pytest.mark.parametrize("good_model", [True, False])
def test_local_judge_preference_lands_on_the_right_output(fake_judge, tmp_path, orders, good_model):
    from bft.eval.score import score_outputs

    fake_judge()
    model, ref = _outputs(8, good_model)
    result = score_outputs(model, ref, "local", tmp_path / "eval", judge_model="tiny", judge_orders=orders)
    assert result["win_rate"] == pytest.approx(100.0 if good_model else 0.0, abs=1.0)


@pytest.mark.parametrize("favour", ["m", "M"])
def test_position_bias_measured_and_removed_by_both_orders(fake_judge, tmp_path, favour):
    fake_judge(favour)
    rows = [
        {"instruction": f"q{i}", "output_1": f"a{i}" * (i + 1), "output_2": f"b{i}", "preference": 1.0 + (i % 2)} for i in range(10)
    ]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one = cal.calibrate(gold, "local", judge_model="tiny", cache_dir=tmp_path / "cache")
    assert one["figures"]["judge"]["position_bias"]["value"] == (1.0 if favour == "m" else 0.0)
    both = cal.calibrate(gold, "local", judge_model="tiny", judge_orders=2, cache_dir=tmp_path / "cache")
    assert both["figures"]["judge"]["position_bias"]["n"] == 0  # every verdict is a draw
    assert both["figures"]["judge"]["agreement"]["value"] == pytest.approx(0.5)


# ---------------------------------------------------------------- gold joining, cache, CLI, summary line


def _gold_folder(tmp_path: Path) -> Path:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "model_outputs").mkdir()
    ref = [{"instruction": f"q{i}", "output": "x" * (10 + 50 * (i % 3)), "generator": "refgen"} for i in range(12)]
    mod = [{"instruction": f"q{i}", "output": "y" * (40 + 7 * i), "generator": "modgen"} for i in range(12)]
    gold = [
        {
            "instruction": f"q{i}",
            "generator_1": "refgen",
            "generator_2": "modgen",
            "annotator": "gpt4",
            "preference": [1.0, 2.0, 0.0][i % 3],
        }
        for i in range(12)
    ]
    for path, rows in (("reference.jsonl", ref), ("model_outputs/modgen.jsonl", mod), ("annotations/gold.jsonl", gold)):
        (tmp_path / path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "annotations" / "gold.jsonl"


def test_gold_outputs_joined_from_sibling_files_and_cached(tmp_path, capsys, length_judge):
    gold = _gold_folder(tmp_path)
    df = cal.load_gold(gold)
    assert len(df) == 12 and df["output_1"].str.startswith("x").all() and df["output_2"].str.startswith("y").all()
    assert (df["preference"] == 1.5).sum() == 4
    cache = tmp_path / "cache"
    argv = ["calibrate", "annotator=local", f"judge_model={length_judge}", f"gold={gold}", "max_pairs=9", f"cache_dir={cache}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "length balanced agreement" in out and "longer_wins" in out and "wrote" in out
    assert main(argv) == 0 and "cached:" in capsys.readouterr().out
    brief = cal.judge_calibration("local", length_judge, cache_dir=cache)
    assert brief["n_pairs"] == 9 and brief["agreement"] == brief["longer_wins_agreement"]
    assert "agrees with gpt4" in cal.calibration_note(brief, "local", length_judge)


def test_uncalibrated_judge_says_so(tmp_path):
    assert cal.judge_calibration("local", "smollm2_135m", cache_dir=tmp_path) is None
    note = cal.calibration_note(None, "local", "smollm2_135m")
    assert note.startswith("judge calibration: none") and "bft-eval calibrate annotator=local judge_model=smollm2_135m" in note


def test_calibrate_cli_errors(tmp_path, capsys):
    assert main(["calibrate", "annotator=local"]) == 2
    assert "needs gold=" in capsys.readouterr().err
    assert main(["calibrate", f"gold={tmp_path / 'none.jsonl'}", "annotator=local"]) == 2
    assert "gold file not found" in capsys.readouterr().err
    assert main(["calibrate", "gold=x", "bogus=1"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err
