"""Tests of bft.eval: offline and fast (the test judge, the random ``tiny`` model, tiny temp data)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bft.eval import annotators, judges, sets, stats
from bft.eval.cli import UsageError, format_table, main, parse_args
from bft.eval.decontaminate import count_reasons, decontaminate, normalise
from bft.eval.score import metrics_from_annotations, score_outputs

OPENAI_VARS = ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_CLIENT_CONFIG_PATH")


def _pairs() -> tuple[list[dict], list[dict]]:
    instructions = ["Name a colour.", "Add 2 and 3.", "Say hello.", "Give a fruit."]
    reference = [
        {"instruction": instructions[0], "output": "Blue.", "generator": "ref", "dataset": "t"},
        {"instruction": instructions[1], "output": "The sum of 2 and 3 is 5.", "generator": "ref", "dataset": "t"},
        {"instruction": instructions[2], "output": "Hello!", "generator": "ref", "dataset": "t"},
        {"instruction": instructions[3], "output": "Apple", "generator": "ref", "dataset": "t"},
    ]
    model = [
        {"instruction": instructions[0], "output": "Blue is a calm colour.", "generator": "m", "dataset": "t"},
        {"instruction": instructions[1], "output": "5", "generator": "m", "dataset": "t"},
        {"instruction": instructions[2], "output": "Hello, world!", "generator": "m", "dataset": "t"},
        {"instruction": instructions[3], "output": "Pear", "generator": "m", "dataset": "t"},
    ]
    return model, reference


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _snapshot(folder: Path) -> dict[str, tuple[float, int]]:
    """Every file (and folder) below ``folder`` with its mtime and size; bytecode caches excluded."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in [*dirs, *files]:
            p = Path(root) / name
            st = p.stat()
            out[str(p)] = (st.st_mtime, st.st_size if p.is_file() else 0)
    return out


# ---------------------------------------------------------------- annotators


def test_resolve_alpaca_eval_annotator(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    spec = annotators.resolve_annotator("weighted_alpaca_eval_gpt4_turbo", tmp_path)
    assert Path(spec.annotators_config).is_file()
    assert spec.annotator_kwargs == {}
    settings = spec.settings["weighted_alpaca_eval_gpt4_turbo"]
    assert settings["fn_completions"] == "openai_completions"
    assert settings["fn_completion_parser"] == "logprob_parser"
    assert "alpaca_eval_gpt4" in annotators.list_alpaca_eval_annotators()


@pytest.mark.parametrize("name", ["local", "test_length_judge"])
def test_resolve_local_judges_use_ae2_weighted_scheme(tmp_path, name):
    spec = annotators.resolve_annotator(name, tmp_path, judge_model="tiny")
    (entry, config), *_ = __import__("yaml").safe_load(Path(spec.annotators_config).read_text()).items()
    assert Path(spec.annotators_config).is_relative_to(tmp_path)
    assert config["fn_completion_parser"] == "logprob_parser"
    assert config["completion_parser_kwargs"]["denominator_tokens"] == ["m", "M"]
    assert config["completion_parser_kwargs"]["is_binarize"] is False
    assert Path(config["prompt_template"]).name == "alpaca_eval_clf.txt" and Path(config["prompt_template"]).is_file()
    assert "fn_completions" not in config  # passed as a callable through alpaca_eval.evaluate's kwargs
    assert callable(spec.annotator_kwargs["fn_completions"])
    if name == "local":
        assert entry == "bft_local_tiny" and spec.annotator_kwargs["completions_kwargs"]["model_name"] == "tiny"


def test_unknown_annotator():
    with pytest.raises(annotators.AnnotatorError, match="unknown annotator 'nope'"):
        annotators.check_annotator_ready("nope")


def test_missing_api_key_fails_fast(monkeypatch, tmp_path, capsys):
    for var in OPENAI_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(annotators.AnnotatorNotReadyError) as err:
        annotators.check_annotator_ready("alpaca_eval_gpt4")
    assert str(err.value) == "annotator 'alpaca_eval_gpt4' needs OPENAI_API_KEY in the environment"
    outputs = _write_jsonl(tmp_path / "o.jsonl", _pairs()[0])
    start = time.perf_counter()
    code = main([f"outputs={outputs}", "eval=ae1", "annotator=alpaca_eval_gpt4"])
    assert time.perf_counter() - start < 1.0
    assert code == 2
    assert capsys.readouterr().err.strip() == ("bft-eval: error: annotator 'alpaca_eval_gpt4' needs OPENAI_API_KEY in the environment")
    assert not (tmp_path / "eval").exists()
    annotators.check_annotator_ready("local")
    annotators.check_annotator_ready("test_length_judge")


# ---------------------------------------------------------------- judges


def test_length_judge_through_alpaca_eval_parser():
    from alpaca_eval.completion_parsers import logprob_parser

    template = Path(annotators.ae2_weighted_scheme()["prompt_template"]).read_text()
    prompt = template.replace("{instruction}", "q").replace("{output_1}", "long answer").replace("{output_2}", "a")
    assert judges.extract_pair(prompt) == ("long answer", "a")
    out = judges.length_judge_completions([prompt])
    pref = logprob_parser(out["completions_all"][0], "m", ["m", "M"], is_binarize=False)
    assert pref == [1.0]  # output_1 (m) is longer, so it wins


# ---------------------------------------------------------------- scoring


def test_score_outputs_writes_only_into_out_dir(tmp_path, monkeypatch):
    import alpaca_eval
    import alpaca_eval.main  # noqa: F401 - import everything first: bytecode is not a write of ours
    import alpaca_eval.metrics.glm_winrate  # noqa: F401

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    package = Path(alpaca_eval.__file__).parent
    before_pkg, before_cwd = _snapshot(package), _snapshot(cwd)
    model, reference = _pairs()
    out_dir = tmp_path / "run" / "eval"
    result = score_outputs(model, reference, "test_length_judge", out_dir, decoding={"temperature": 0.7})
    assert _snapshot(package) == before_pkg
    assert _snapshot(cwd) == before_cwd
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"eval"}

    # the longer output wins: model wins pairs 0 and 2, loses 1 and 3
    assert result["win_rate"] == pytest.approx(50.0)
    assert result["discrete_win_rate"] == pytest.approx(50.0)
    assert result["n_total"] == 4 and result["n_wins"] == 2
    assert result["length_controlled_winrate"] is None and "805" in result["lc_unavailable_reason"]
    assert result["alpaca_eval_version"] == "0.6.6"
    assert result["decoding"] == {"temperature": 0.7}
    assert result["avg_length"] == int(np.mean([len(m["output"]) for m in model]))
    on_disk = json.loads((out_dir / "leaderboard.json").read_text())
    assert on_disk["win_rate"] == pytest.approx(result["win_rate"])
    row = pd.read_csv(out_dir / "leaderboard.csv")
    assert list(row["model"]) == ["m"] and row["win_rate"].iloc[0] == pytest.approx(50.0)
    assert (out_dir / "annotations_cache.json").is_file()
    annotations = json.loads((out_dir / "alpaca_eval" / "annotations.json").read_text())
    assert {a["annotator"] for a in annotations} == {"bft_test_length_judge"}

    # a re-run reuses alpaca_eval's cache and gives the same figure
    again = score_outputs(model, reference, "test_length_judge", out_dir)
    assert again["win_rate"] == pytest.approx(result["win_rate"])


def test_score_outputs_local_judge_tiny(tmp_path):
    model, reference = _pairs()
    result = score_outputs(model[:2], reference, "local", tmp_path / "eval", judge_model="tiny", judge_dtype="float32")
    assert result["n_total"] == 2 and 0.0 <= result["win_rate"] <= 100.0
    assert result["judge_model"] == "tiny"
    assert result["annotator_settings"]["completions_kwargs"]["model_name"] == "tiny"
    annotations = json.loads((tmp_path / "eval" / "alpaca_eval" / "annotations.json").read_text())
    assert all(1.0 <= a["preference"] <= 2.0 for a in annotations)


def test_metrics_from_hand_made_annotations():
    annotations = [
        {"instruction": "a", "preference": 1.0, "output_2": "xx"},
        {"instruction": "b", "preference": 2.0, "output_2": "xxxx"},
        {"instruction": "c", "preference": 1.5, "output_2": "x"},
        {"instruction": "d", "preference": 2.0, "output_2": "xxx"},
        {"instruction": "e", "preference": None, "output_2": "xxxxxx"},
    ]
    m = metrics_from_annotations(annotations)
    assert m["win_rate"] == pytest.approx(62.5)
    assert m["discrete_win_rate"] == pytest.approx(62.5)
    assert m["standard_error"] == pytest.approx(pd.Series([0, 1, 0.5, 1]).sem() * 100)
    assert (m["n_total"], m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_missing"]) == (4, 2, 1, 1, 1)
    assert m["avg_length"] == int(np.mean([2, 4, 1, 3, 6]))
    assert m["length_controlled_winrate"] is None and "output_1" in m["lc_unavailable_reason"]
    weighted = metrics_from_annotations([{"preference": 1.25}, {"preference": 1.75}])
    assert weighted["win_rate"] == pytest.approx(50.0)


def _full_annotations(rng: np.random.Generator, n: int = 805) -> list[dict]:
    return [
        {
            "instruction": f"q{i}",
            "output_1": "x" * int(rng.integers(10, 400)),
            "output_2": "y" * int(rng.integers(10, 400)),
            "generator_1": "ref",
            "generator_2": "model",
            "preference": float(rng.uniform(1, 2)),
        }
        for i in range(n)
    ]


def test_length_controlled_from_local_calibration_file(tmp_path):
    """The GLM plumbing with a synthetic df_gamed.csv: a figure from alpaca_eval's GLM, or None with a reason."""
    rng = np.random.default_rng(0)
    annotations = _full_annotations(rng)
    missing = metrics_from_annotations(annotations, lc_weights_dir=tmp_path)
    assert missing["length_controlled_winrate"] is None
    assert "df_gamed.csv not found" in missing["lc_unavailable_reason"]
    gamed = pd.concat(
        pd.DataFrame(
            {
                "model": name,
                "index": np.arange(805),
                "preference": rng.uniform(0, 1, 805),
                "std_delta_len": rng.normal(size=805),
                "instruction_difficulty": rng.normal(size=805),
                "not_gamed_baseline": False,
            }
        )
        for name in ("gamed_a", "gamed_b")
    )
    gamed.to_csv(tmp_path / "df_gamed.csv", index=False)
    m = metrics_from_annotations(annotations, lc_weights_dir=tmp_path)
    assert m["lc_unavailable_reason"] is None
    assert 0.0 < m["length_controlled_winrate"] < 100.0
    assert [f.name for f in tmp_path.iterdir()] == ["df_gamed.csv"]  # save_weights_dir=None: no GLM weights saved


# ---------------------------------------------------------------- stats


def test_paired_comparison():
    same = stats.paired_comparison([1, 2, 1.5, 2], [1, 2, 1.5, 2])
    assert same["difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    better = stats.paired_comparison([2, 2, 2, 2], [1, 1, 1, 1])
    assert better["difference"] == pytest.approx(100.0) and better["ci_low"] == pytest.approx(100.0)
    rng = np.random.default_rng(1)
    a = rng.choice([1.0, 2.0], size=300, p=[0.4, 0.6])
    b = rng.choice([1.0, 2.0], size=300, p=[0.6, 0.4])
    r1, r2 = stats.paired_comparison(a, b, seed=3), stats.paired_comparison(a, b, seed=3)
    assert r1 == r2
    assert r1["ci_low"] <= r1["difference"] <= r1["ci_high"]
    assert r1["difference"] == pytest.approx((a.mean() - b.mean()) * 100)
    assert stats.paired_comparison([0, 2], [1.5, 2])["difference"] == 0  # 0 = legacy draw
    with pytest.raises(ValueError):
        stats.paired_comparison([1, 2], [1])
    with pytest.raises(ValueError):
        stats.paired_comparison([1, 3], [1, 2])


# ---------------------------------------------------------------- decontamination


def test_decontaminate_exact_ngram_embedding():
    eval_instructions = [
        "What are the names of some famous actors that started their careers on Broadway?",
        "How do I wrap a present neatly?",
    ]
    records = [
        {"instruction": "  how do I WRAP a present, neatly!! ", "output": "a"},  # exact after normalisation
        {"instruction": "Tell me: what are the names of some famous actors that started on TV?", "output": "b"},
        {"instruction": "Which well-known actors began their careers on Broadway stages?", "output": "c"},
        {"instruction": "Write a haiku about the sea.", "output": "d"},
    ]
    kept, dropped = decontaminate(records, eval_instructions, use_embeddings=False)
    reasons = {d["output"]: d["decontam_reason"] for d in dropped}
    assert reasons == {"a": "exact", "b": "ngram"}
    assert dropped[1]["decontam_evidence"] == "what are the names of some famous actors"
    assert [k["output"] for k in kept] == ["c", "d"]
    assert "decontam_reason" not in kept[0]

    kept, dropped = decontaminate(records, eval_instructions, embed_threshold=0.75)
    assert count_reasons(dropped) == {"exact": 1, "ngram": 1, "embedding": 1}
    emb = [d for d in dropped if d["decontam_reason"] == "embedding"][0]
    assert emb["output"] == "c" and emb["decontam_match"] == eval_instructions[0] and emb["decontam_evidence"] >= 0.75
    assert [k["output"] for k in kept] == ["d"]
    assert normalise("Hello,   World!") == "hello world"


# ---------------------------------------------------------------- eval sets


def test_load_eval_set_local_files(tmp_path):
    rows = _pairs()[1]
    jsonl = _write_jsonl(tmp_path / "set.jsonl", rows)
    as_list = tmp_path / "set.json"
    as_list.write_text(json.dumps([{"instruction": "x", "output": "y"}]))
    assert sets.load_eval_set(str(jsonl)) == rows
    assert [r["instruction"] for r in sets.load_eval_set(str(jsonl), max_instances=2)] == [
        rows[0]["instruction"],
        rows[1]["instruction"],
    ]
    assert sets.load_eval_set(str(as_list)) == [{"instruction": "x", "output": "y", "generator": "reference", "dataset": "unknown"}]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}])
    with pytest.raises(sets.EvalSetError, match="lacks string field"):
        sets.load_eval_set(str(bad))
    with pytest.raises(sets.EvalSetError, match="neither ae1, ae2, embedded"):
        sets.load_eval_set(str(tmp_path / "missing.jsonl"))


def test_hub_set_offline_error_is_one_line(monkeypatch):
    import huggingface_hub

    def not_cached(*args, **kwargs):
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_cached)
    monkeypatch.setattr(sets, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(sets.EvalSetError) as err:
        sets.load_eval_set("ae2")
    message = str(err.value)
    assert "\n" not in message and "alpaca_eval_gpt4_baseline.json" in message and "local" in message


# ---------------------------------------------------------------- CLI


def test_cli_annotations_mode_joins_outputs(tmp_path, capsys):
    model, _ = _pairs()
    annotations = [
        {"instruction": m["instruction"], "generator_2": "m", "annotator": "alpaca_eval_gpt4", "preference": p}
        for m, p in zip(model, [2.0, 1.0, 2.0, 0.0], strict=True)
    ]
    ann = _write_jsonl(tmp_path / "m__alpaca_eval_gpt4.jsonl", annotations)
    outs = _write_jsonl(tmp_path / "m.jsonl", model)
    assert main([f"annotations={ann}", f"outputs={outs}"]) == 0
    printed = capsys.readouterr().out
    assert "unavailable" in printed and "HB | LLaMA 65B | Humpback" in printed and "83.71" in printed
    written = json.loads((tmp_path / "m__alpaca_eval_gpt4.leaderboard.json").read_text())
    assert written["win_rate"] == pytest.approx(62.5)
    assert written["avg_length"] == int(np.mean([len(m["output"]) for m in model]))
    assert (tmp_path / "m__alpaca_eval_gpt4.leaderboard.csv").is_file()


def test_cli_run_mode_rescores_into_eval_subfolder(tmp_path, capsys):
    model, reference = _pairs()
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_outputs.json").write_text(json.dumps(model))
    _write_jsonl(run / "reference_outputs.jsonl", reference)
    assert main([f"run={run}", "annotator=test_length_judge"]) == 0
    result = json.loads((run / "eval" / "leaderboard.json").read_text())
    assert result["win_rate"] == pytest.approx(50.0) and result["annotator"] == "test_length_judge"
    assert "model" in capsys.readouterr().out


def test_cli_argument_errors(capsys):
    with pytest.raises(UsageError):
        parse_args(["outputs"])
    with pytest.raises(UsageError, match="unknown key"):
        parse_args(["outputz=x"])
    assert main(["eval=ae1"]) == 2
    assert "give outputs=" in capsys.readouterr().err
    table = format_table({"model": "x", "win_rate": 1.0, "length_controlled_winrate": None}, "weighted_alpaca_eval_gpt4_turbo")
    assert "BFT Tab.10" in table and "unavailable" in table
