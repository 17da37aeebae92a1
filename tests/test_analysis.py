"""bft.analysis: trigram counts, length stats, input resolution, MAUVE guard and the bft-analyze CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bft.analysis.diversity import per_thousand, unique_ngrams, word_ngrams, words
from bft.analysis.inputs import InputError, load_dataset, resolve_dataset_file, split_spec, subsample
from bft.analysis.lengths import char_lengths, length_stats, token_lengths
from bft.analysis.mauve_distance import compute_mauve


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_words_lowercase_and_drop_punctuation():
    assert words("The cat, the DOG!") == ["the", "cat", "the", "dog"]


def test_trigram_counts_exact():
    assert word_ngrams("a b c d") == {("a", "b", "c"), ("b", "c", "d")}
    assert word_ngrams("a b") == set()
    # "the cat sat on the mat": 4 trigrams; "The cat sat down." adds only ("cat","sat","down").
    assert unique_ngrams(["the cat sat on the mat", "The cat sat down."]) == 5
    # trigrams never cross text boundaries: "x y" + "z w" has none
    assert unique_ngrams(["x y", "z w"]) == 0
    assert unique_ngrams(["a a a a a"]) == 1
    assert per_thousand(5, 2) == 2500.0
    assert per_thousand(5, 0) is None


def test_length_stats():
    assert length_stats([1, 2, 3, 10]) == {"mean": 4.0, "median": 2.5}
    assert length_stats([]) == {"mean": None, "median": None}
    assert char_lengths(["ab", ""]) == [2, 0]


def test_token_lengths_with_fake_tokenizer():
    def fake(batch, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [t.split() for t in batch]}

    assert token_lengths(["a b c", "d", ""], fake, batch_size=2) == [3, 1, 0]


def test_folder_resolution_order(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write_jsonl(run / "seed.jsonl", [{"instruction": "i", "output": "o"}])
    assert resolve_dataset_file(run) == run / "seed.jsonl"
    _write_jsonl(run / "curated.jsonl", [{"instruction": "i", "output": "o"}])
    assert resolve_dataset_file(run) == run / "curated.jsonl"
    _write_jsonl(run / "generated.jsonl", [{"instruction": "i", "output": "o"}])
    assert resolve_dataset_file(run) == run / "generated.jsonl"
    nested = tmp_path / "outer" / "artifacts" / "rewrite" / "k1"
    nested.mkdir(parents=True)
    _write_jsonl(nested / "generated.jsonl", [{"instruction": "i", "output": "o"}])
    assert resolve_dataset_file(tmp_path / "outer") == nested / "generated.jsonl"
    with pytest.raises(InputError):
        resolve_dataset_file(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="none of"):
        resolve_dataset_file(tmp_path / "empty")


def test_load_dataset_names_raw_text_and_subsample(tmp_path):
    web = _write_jsonl(tmp_path / "web.jsonl", [{"id": str(i), "text": f"doc {i}"} for i in range(5)] + [{"text": ""}])
    ds = load_dataset(f"corpus={web}", max_records=3)
    assert ds.name == "corpus" and ds.raw and ds.n_total == 5 and len(ds.records) == 3
    assert all(r["instruction"] == "" and r["output"].startswith("doc") for r in ds.records)
    assert load_dataset(f"corpus={web}", max_records=3).records == ds.records  # deterministic
    folder = tmp_path / "art"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"instruction": "q", "output": "a"}])
    pairs = load_dataset(str(folder))
    assert pairs.name == "art" and not pairs.raw and pairs.path.name == "train.jsonl"
    assert split_spec("a=b/c.jsonl") == ("a", "b/c.jsonl")
    assert split_spec("/x/a=b.jsonl") == (None, "/x/a=b.jsonl")
    assert subsample(list(range(10)), 4) == sorted(subsample(list(range(10)), 4))


def test_mauve_small_sets_and_ordering():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(120, 16)).astype(np.float32)
    same = compute_mauve(p, p.copy())
    far = compute_mauve(p, rng.normal(loc=4.0, size=(120, 16)).astype(np.float32))
    assert same.score is not None and far.score is not None
    assert 0.0 <= far.score <= 1.0 and 0.0 <= same.score <= 1.0
    assert same.score > far.score
    tiny = compute_mauve(p[:5], p[:5])
    assert tiny.score is None and "too few" in tiny.reason


def _pairs(prefix: str, n: int) -> list[dict[str, str]]:
    topics = ["rivers", "bread", "chess", "planets", "poetry", "taxes"]
    return [
        {"instruction": f"{prefix} question {i} about {topics[i % 6]}?", "output": f"{prefix} answer {i}: {topics[i % 6]} are nice."}
        for i in range(n)
    ]


@pytest.mark.slow  # loads the embedding model
def test_cli_end_to_end(tmp_path, capsys):
    from bft.analysis.cli import main

    a = _write_jsonl(tmp_path / "a.jsonl", _pairs("alpha", 12))
    b_dir = tmp_path / "b_run"
    b_dir.mkdir()
    _write_jsonl(b_dir / "generated.jsonl", _pairs("beta", 8))
    web = _write_jsonl(tmp_path / "web.jsonl", [{"text": f"Web page {i} on gardening and tomatoes."} for i in range(6)])
    evals = _write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "alpha question 3 about planets?", "output": "x"}])
    out = tmp_path / "out"
    rc = main(["A=" + str(a), str(b_dir), str(web), "--out", str(out), "--no-mauve", "--tokenizer", "tiny", "--eval-set", str(evals)])
    assert rc == 0
    for name in ("analysis.md", "analysis.csv", "analysis.json", "embedding_map.png", "lengths.png", "trigrams.png"):
        assert (out / name).stat().st_size > 0, name
    payload = json.loads((out / "analysis.json").read_text())
    rows = {r["dataset"]: r for r in payload["datasets"]}
    assert list(rows) == ["A", "b_run", "web"]
    assert rows["A"]["overlap_exact"] == 1 and rows["b_run"]["overlap_total"] == 0
    assert rows["web"]["kind"] == "raw web" and rows["web"]["instr_unique_trigrams"] is None
    assert rows["A"]["n_records"] == 12 and rows["A"]["resp_unique_trigrams"] > 0
    assert rows["A"]["mauve"] is None
    assert "unique trigrams: responses" in capsys.readouterr().out
    assert "| metric | A | b_run | web |" in (out / "analysis.md").read_text()


def test_cli_bad_input(tmp_path, capsys):
    from bft.analysis.cli import main

    assert main([str(tmp_path / "nope.jsonl"), "--no-mauve", "--eval-set", "none"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cached_embedder_embeds_each_text_once():
    from bft.analysis.embeddings import CachedEmbedder

    calls: list[list[str]] = []

    def fake(texts):
        calls.append(list(texts))
        return np.array([[float(len(t))] for t in texts])

    emb = CachedEmbedder(fake)
    assert emb(["ab", "c", "ab"]).ravel().tolist() == [2.0, 1.0, 2.0]
    assert emb(["c", "xyz"]).ravel().tolist() == [1.0, 3.0]
    assert calls == [["ab", "c"], ["xyz"]]


def test_log_to_wandb_without_run_is_a_no_op(tmp_path):
    from bft.analysis.wandb_log import log_to_wandb

    assert log_to_wandb(None, [{"dataset": "a", "mauve": 0.5}], tmp_path) is False
