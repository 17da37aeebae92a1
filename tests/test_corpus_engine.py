"""Tests for the datatrove corpus stage (bft.data.corpus.build_corpus): readers, language filter, accounting,
workers, executors. Small corpora written to tmp; offline."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pytest
from helpers.corpus_oracle import clean_corpus, read_corpus

from bft.config.schema import CorpusConfig
from bft.data.corpus import build_corpus, segment_at_headers
from bft.data.corpus.steps import is_bad_header
from bft.data.io import DataError

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)

_WORDS = [
    "river",
    "town",
    "stone",
    "bridge",
    "farmer",
    "cart",
    "spring",
    "water",
    "snow",
    "hill",
    "valley",
    "market",
    "bread",
    "mill",
    "wheel",
    "road",
    "school",
    "church",
    "winter",
    "summer",
    "harvest",
    "field",
    "orchard",
    "apple",
    "barley",
    "wool",
    "sheep",
    "horse",
    "lantern",
    "window",
    "garden",
    "baker",
    "smith",
    "tailor",
    "letter",
    "train",
    "station",
    "clock",
    "tower",
    "square",
    "festival",
    "music",
    "dance",
    "song",
    "story",
    "mayor",
    "council",
    "meeting",
]

FOREIGN = {
    "sv": "Staden växte upp runt en stenbro som byggdes av bönderna. På våren steg vattnet snabbt när snön smälte i "
    "bergen ovanför dalen, och därför behövde de en torr väg över floden för sina vagnar och djur.",
    "de": "Die kleine Stadt wuchs rund um eine steinerne Brücke, die von den Bauern gebaut wurde. Im Frühling stieg "
    "das Wasser schnell, wenn der Schnee in den Bergen über dem Tal schmolz, und sie brauchten einen trockenen Weg.",
    "ru": "Город вырос вокруг каменного моста, который построили местные крестьяне. Весной вода быстро поднималась, "
    "когда в горах над долиной таял снег, и им нужна была сухая переправа для телег и скота.",
    "zh": "这个小镇是围绕一座石桥发展起来的，这座桥是当地农民修建的。春天山上的积雪融化时，河水很快上涨，"
    "所以他们需要一条干燥的道路，让马车和牲畜能够安全地通过河流，到达对岸的市场和田地。",
}


_TEMPLATES = (
    "The {} near the {} was built with {} and {} by people who lived in the {}.",
    "In the spring, the {} of the {} had to be moved to a dry {} before the {} came.",
    "Children walked to the {} every morning, past the {} and the old {} of the {}.",
    "When the {} opened, the {} sold {} to anyone who could pay with {} or {}.",
    "A {} that stood by the {} was painted each year, and the {} kept it from the {}.",
    "Most visitors remember the {} because it is close to the {} and to the {}.",
    "There is a story about a {} who found a {} under the {} during the {}.",
    "People say that the {} should never be left with the {} after the {} ends.",
    "At the {}, they talked about the {}, the price of {}, and how to fix the {}.",
    "Nobody knows why the {} was given to the {}, but it has been there since the {}.",
)


def english(i: int, sentences: int = 8) -> str:
    """A distinct English pseudo-prose paragraph (seeded by ``i``), varied enough for the Gopher rules."""
    rng = random.Random(i)
    chosen = rng.sample(_TEMPLATES, k=min(sentences, len(_TEMPLATES)))
    return " ".join(t.format(*(rng.choice(_WORDS) for _ in range(t.count("{}")))) for t in chosen)


def write_shards(folder: Path, shards: list[list[dict]], suffix: str = ".jsonl.gz") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, rows in enumerate(shards):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        path = folder / f"part-{k:03d}{suffix}"
        if suffix.endswith(".gz"):
            path.write_bytes(gzip.compress(data, mtime=0))
        elif suffix.endswith(".zst"):
            import zstandard

            path.write_bytes(zstandard.ZstdCompressor().compress(data))
        else:
            path.write_bytes(data)


def cfg(source: Path | str, **kw) -> CorpusConfig:
    return CorpusConfig(**({"source": str(source), "min_chars": 200, "max_chars": 3000} | kw))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_embedded_default_matches_the_in_memory_reference(tmp_path: Path) -> None:
    counts = build_corpus(CorpusConfig(), "raise", tmp_path / "corpus.jsonl")
    expected, expected_counts = clean_corpus(read_corpus(CorpusConfig()).records, CorpusConfig())
    assert lines(tmp_path / "corpus.jsonl") == expected  # same records, same order
    for key in ("input", "symbol_ratio", "too_short", "near_duplicate", "segmented", "segments", "noise_lines", "kept"):
        assert counts["removed"][key] == expected_counts[key], key
    assert counts["in"] == 80 and counts["out"] == len(expected) == 76
    report = json.loads((tmp_path / "filters.json").read_text())
    by_name = {f["filter"]: f for f in report["filters"]}
    assert list(by_name) == ["clean", "language", "length", "near_duplicate"]
    assert by_name["near_duplicate"]["removed"] == 3 and len(by_name["near_duplicate"]["examples"]) == 3
    assert by_name["clean"]["examples"][0]["reason"] == "symbol_ratio"
    assert not (tmp_path / "_datatrove").exists()  # scratch removed


def test_folder_of_gz_shards_drops_other_languages_with_counts(tmp_path: Path) -> None:
    shards = [
        [{"id": f"en-{k}-{i}", "text": english(k * 10 + i), "url": f"https://e.example/{k}/{i}"} for i in range(4)] for k in range(2)
    ]
    shards.append([{"id": f"x-{lang}", "text": text} for lang, text in FOREIGN.items()])
    write_shards(tmp_path / "docs", shards)
    counts = build_corpus(cfg(tmp_path / "docs"), "raise", tmp_path / "out" / "corpus.jsonl")
    kept = lines(tmp_path / "out" / "corpus.jsonl")
    assert [d["id"] for d in kept] == [f"en-{k}-{i}" for k in range(2) for i in range(4)]
    assert counts["removed"]["language"] == len(FOREIGN) and counts["in"] == 8 + len(FOREIGN)
    lang = next(f for f in json.loads((tmp_path / "out" / "filters.json").read_text())["filters"] if f["filter"] == "language")
    assert lang["reasons"] == {f"lang_{code}": 1 for code in sorted(FOREIGN)}
    assert {e["id"] for e in lang["examples"]} == {f"x-{code}" for code in FOREIGN}
    assert kept[0]["source"] == "part-000" and kept[0]["url"] == "https://e.example/0/0"
    # every language kept when the list is empty
    everything = build_corpus(cfg(tmp_path / "docs", languages=[]), "raise", tmp_path / "all" / "corpus.jsonl")
    assert "language" not in everything["removed"] and everything["out"] > 8


def test_two_workers_give_the_same_corpus_as_one(tmp_path: Path) -> None:
    shards = [[{"id": f"d{k}-{i}", "text": english(k * 100 + i)} for i in range(5)] for k in range(4)]
    shards[3].append({"id": "dup", "text": shards[0][1]["text"].replace("The", "A", 1)})  # near-duplicate across shards
    write_shards(tmp_path / "docs", shards, suffix=".jsonl")
    out1, out2 = tmp_path / "w1" / "corpus.jsonl", tmp_path / "w2" / "corpus.jsonl"
    c1 = build_corpus(cfg(tmp_path / "docs", workers=1), "raise", out1)
    c2 = build_corpus(cfg(tmp_path / "docs", workers=2), "raise", out2)
    assert out1.read_bytes() == out2.read_bytes()
    assert c1 == c2 and c1["removed"]["near_duplicate"] == 1 and c1["out"] == 20


def test_glob_zst_json_list_and_parquet_sources(tmp_path: Path) -> None:
    rows = [{"id": f"z{i}", "text": english(i)} for i in range(3)]
    write_shards(tmp_path / "z" / "documents", [rows], suffix=".json.zst")
    counts = build_corpus(cfg(f"{tmp_path}/z/documents/*.json.zst", dedup=False), "raise", tmp_path / "a" / "c.jsonl")
    assert counts["out"] == 3
    (tmp_path / "list.json").write_text(json.dumps(rows))
    assert build_corpus(cfg(tmp_path / "list.json"), "raise", tmp_path / "b" / "c.jsonl")["out"] == 3
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "docs.parquet")
    out = tmp_path / "p" / "c.jsonl"
    assert build_corpus(cfg(tmp_path / "docs.parquet"), "raise", out)["out"] == 3
    assert [d["id"] for d in lines(out)] == ["z0", "z1", "z2"]


def test_bad_records_raise_with_location_or_are_counted(tmp_path: Path) -> None:
    rows = [json.dumps({"id": "a", "text": english(1)}), "{not json", json.dumps({"id": "c", "text": ""})]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "s.jsonl.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    with pytest.raises(DataError, match=r"s\.jsonl\.gz:2: "):
        build_corpus(cfg(tmp_path / "docs"), "raise", tmp_path / "o" / "c.jsonl")
    (tmp_path / "docs" / "t.jsonl").write_text(json.dumps({"id": "t", "text": english(2)}) + "\n")
    with pytest.raises(DataError, match=r"s\.jsonl\.gz:2: malformed JSON"):  # raised in a worker process
        build_corpus(cfg(tmp_path / "docs", workers=2), "raise", tmp_path / "o2" / "c.jsonl")
    counts = build_corpus(cfg(tmp_path / "docs"), "skip", tmp_path / "s" / "c.jsonl")
    assert counts["skipped_input"] == {"empty_field": 1, "malformed_json": 1} and counts["out"] == 2
    with pytest.raises(DataError, match="file not found"):
        build_corpus(cfg(tmp_path / "missing.jsonl"), "raise", tmp_path / "m" / "c.jsonl")
    with pytest.raises(DataError, match="unknown filter 'gopher'"):
        build_corpus(cfg(tmp_path / "docs", filters=["gopher"]), "raise", tmp_path / "g" / "c.jsonl")


def _warc(path: Path, pages: dict[str, str]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with path.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, html in pages.items():
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=headers)
            writer.write_record(record)


def test_warc_pages_are_extracted_and_segmented_under_headers(tmp_path: Path) -> None:
    body = "".join(f"<h2>{title}</h2><p>{english(i, 6)}</p>" for i, title in enumerate(["Planting apples", "SPECIAL OFFERS TODAY"]))
    html = f"<html><head><title>Orchard</title></head><body><article><h1>Orchard notes</h1>{body}</article></body></html>"
    (tmp_path / "crawl").mkdir()
    _warc(tmp_path / "crawl" / "a.warc.gz", {"https://orchard.example/notes": html})
    humpback = cfg(tmp_path / "crawl", segment_by="headers", filters=["humpback"], min_chars=100, dedup=False)
    counts = build_corpus(humpback, "raise", tmp_path / "o" / "c.jsonl")
    kept = lines(tmp_path / "o" / "c.jsonl")
    assert counts["removed"]["humpback"] == 1  # the all-caps header's section
    assert len(kept) == 1 and kept[0]["text"].startswith("Planting apples\n")
    assert kept[0]["url"] == "https://orchard.example/notes"


def test_header_segmentation_rules() -> None:
    text = "Intro line that has no header above it at all.\nFirst header\n" + english(1, 2) + "\nHOME\n" + english(2, 2)
    pieces = segment_at_headers(text, 3000)
    assert [h for h, _ in pieces] == [None, "First header", "HOME"]
    assert pieces[1][1] == "First header\n" + english(1, 2)
    assert is_bad_header("HOME") and is_bad_header("Home | About | Contact") and not is_bad_header("First header")


def test_standard_and_paper_filters(tmp_path: Path) -> None:
    repeated = "\n".join(["Buy cheap apples from the river town market today."] * 12)
    rows = [
        {"id": "good", "text": english(5), "metadata": {"bucket": "head"}},
        {"id": "rep", "text": repeated, "metadata": {"bucket": "head"}},
        {"id": "middle", "text": english(6), "metadata": {"bucket": "middle"}},
        {"id": "no_bucket", "text": english(7)},  # a record without its bucket is removed, never passed
    ]
    write_shards(tmp_path / "d", [rows], suffix=".jsonl")
    filters = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    c = cfg(tmp_path / "d", filters=filters, perplexity_bucket="head", bucket_field="bucket")
    counts = build_corpus(c, "raise", tmp_path / "o" / "c.jsonl")
    assert [d["id"] for d in lines(tmp_path / "o" / "c.jsonl")] == ["good"]
    assert counts["removed"]["bucket"] == 2 and counts["removed"]["gopher_repetition"] == 1
    reasons = json.loads((tmp_path / "o" / "filters.json").read_text())["filters"]
    assert next(f for f in reasons if f["filter"] == "bucket")["reasons"] == {"bucket_middle": 1, "no_bucket": 1}


def test_max_documents_caps_the_input(tmp_path: Path) -> None:
    write_shards(tmp_path / "d", [[{"id": f"d{i}", "text": english(i)} for i in range(6)]], suffix=".jsonl")
    assert build_corpus(cfg(tmp_path / "d", max_documents=4), "raise", tmp_path / "o" / "c.jsonl")["in"] == 4


def test_slurm_and_ray_compose_into_datatrove_executors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datatrove.executor import SlurmPipelineExecutor

    import bft.data.corpus.build as build
    from bft.config.validate import ConfigError
    from bft.data.corpus.langid import LanguageIdFilter

    captured = {}

    def capture(executor, name, poll_seconds=0):  # stop before anything is submitted
        captured["last"] = executor
        raise RuntimeError("not submitted")

    monkeypatch.setattr(build, "run_chain", capture)
    write_shards(tmp_path / "d", [[{"id": "a", "text": english(1)}]] * 3, suffix=".jsonl")
    options = {"partition": "cpu", "time": "02:00:00", "cpus_per_task": 2, "qos": "high"}
    slurm = cfg(tmp_path / "d", executor="slurm", workers=8, executor_options=options)
    with pytest.raises(RuntimeError, match="not submitted"):
        build_corpus(slurm, "raise", tmp_path / "o" / "c.jsonl")
    last = captured["last"]
    chain = [last, last.depends, last.depends.depends, last.depends.depends.depends]
    assert all(isinstance(e, SlurmPipelineExecutor) for e in chain)
    main = chain[-1]
    assert (main.partition, main.time, main.cpus_per_task, main.qos) == ("cpu", "02:00:00", 2, "high")
    assert main.tasks == 3 and main.workers == 8 and chain[1].tasks == 1  # clusters: one task
    assert any(isinstance(step, LanguageIdFilter) for step in main.pipeline)
    with pytest.raises(ConfigError, match="corpus.executor_options.partition"):
        build_corpus(cfg(tmp_path / "d", executor="slurm"), "raise", tmp_path / "o" / "c.jsonl")
    with pytest.raises(ConfigError, match="corpus.executor must be one of"):
        build_corpus(cfg(tmp_path / "d", executor="dask"), "raise", tmp_path / "o" / "c.jsonl")
    ray = cfg(tmp_path / "d", executor="ray", workers=4, dedup=False, executor_options={"cpus_per_task": 2})
    with pytest.raises(RuntimeError, match="not submitted"):
        build_corpus(ray, "raise", tmp_path / "r" / "c.jsonl")
    assert type(captured["last"]).__name__ == "RayPipelineExecutor"
    assert (captured["last"].tasks, captured["last"].workers, captured["last"].cpus_per_task) == (3, 4, 2)


def test_interrupted_run_resumes_from_finished_tasks_with_full_counts(tmp_path: Path) -> None:
    good = [[{"id": f"d{k}-{i}", "text": english(k * 10 + i)} for i in range(3)] for k in range(2)]
    write_shards(tmp_path / "docs", good, suffix=".jsonl")
    fresh = build_corpus(cfg(tmp_path / "docs"), "raise", tmp_path / "fresh" / "c.jsonl")
    broken = tmp_path / "docs" / "part-001.jsonl"
    original = broken.read_text()
    broken.write_text(original + "{broken\n")
    out = tmp_path / "resumed" / "c.jsonl"
    with pytest.raises(DataError, match=r"part-001\.jsonl:4"):
        build_corpus(cfg(tmp_path / "docs"), "raise", out)  # task 0 finished, task 1 failed
    assert (tmp_path / "resumed" / "_datatrove" / "output" / "00000.jsonl").is_file() or (
        tmp_path / "resumed" / "_datatrove" / "filtered" / "00000.jsonl"
    ).is_file()
    broken.write_text(original)
    resumed = build_corpus(cfg(tmp_path / "docs"), "raise", out)
    assert resumed == fresh and out.read_bytes() == (tmp_path / "fresh" / "c.jsonl").read_bytes()
