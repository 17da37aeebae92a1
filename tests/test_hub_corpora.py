"""Hub corpora without loading scripts: Dolma by a release's URL list (Dolma's CC head bucket chosen by file name),
C4 and oasst1 from their data files, read from tiny local copies in the real layouts (tests/helpers/hub_mirrors.py);
the hub/https locations are checked without a network; ``corpus.tokenizer`` takes registry names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.hub_mirrors import DOLMA_BASE, write_c4, write_dolma, write_oasst1
from omegaconf import OmegaConf

from bft.config.schema import CorpusConfig, SeedConfig
from bft.data.corpus import build_corpus
from bft.data.corpus.readers import make_reader, resolve_source
from bft.data.io import DataError
from bft.data.remote import check_local_inputs, mirror_candidates, url_list_location
from bft.data.seed import load_seed

REPO = Path(__file__).resolve().parents[1]
HEAD_IDS = [f"cc_en_head-{shard:04d}-{i}" for shard in range(2) for i in range(3)]


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def _dolma(tmp_path: Path, layout: str) -> CorpusConfig:
    """Dolma's config over a local copy: ``paths`` (each URL's path in the mirror), ``flat`` (``wget -P``: the bare
    file names in one folder) or ``file_urls`` (a list of file:// URLs, no mirror)."""
    url_list, mirror = write_dolma(tmp_path, file_urls=layout == "file_urls")
    if layout == "flat":
        flat = tmp_path / "flat"
        flat.mkdir()
        for path in mirror.rglob("*.json.gz"):
            path.rename(flat / path.name)
        mirror = flat
    return CorpusConfig(
        source="allenai/dolma",
        url_list=url_list.as_uri() if layout == "file_urls" else str(url_list),
        mirror=None if layout == "file_urls" else str(mirror),
        perplexity_bucket="head",
        segment=False,
        max_chars=16000,
    )


@pytest.mark.parametrize("layout", ["paths", "flat", "file_urls"])
def test_dolma_url_list_reads_only_the_head_bucket_files(tmp_path: Path, layout: str) -> None:
    cfg = _dolma(tmp_path, layout)
    source = resolve_source(cfg)
    assert source.files == ("cc_en_head-0000.json.gz", "cc_en_head-0001.json.gz") and source.format == "jsonl"
    counts = build_corpus(cfg, "raise", tmp_path / "out" / "corpus.jsonl")
    assert _ids(tmp_path / "out" / "corpus.jsonl") == HEAD_IDS and counts["in"] == 6


@pytest.mark.slow  # loads a tokenizer and the transformers stack
def test_paper_experiment_corpus_stage_reads_only_cc_en_head(compose_cfg, tmp_path: Path) -> None:
    """Acceptance: +experiment=backandforth_paper over a local Dolma copy (URL list, real file names, head, middle and
    tail mixed), run through the corpus stage as the pipeline runs it; the token filter on the registry's tiny."""
    from bft.config.validate import validate
    from bft.pipeline.plan import build_plan

    url_list, mirror = write_dolma(tmp_path)
    cfg = compose_cfg(  # paper_smoke: every role on one model, here the registry's tiny (the context budget loads its tokenizer)
        "+experiment=backandforth_paper",
        "debug=paper_smoke",
        "model.name=tiny",
        f"corpus.url_list={url_list}",
        f"corpus.mirror={mirror}",
        "corpus.tokenizer=tiny",
    )
    validate(cfg)
    assert cfg.corpus.source == "allenai/dolma" and cfg.corpus.perplexity_bucket == "head"
    plan = build_plan(cfg)
    check_local_inputs(cfg.corpus, cfg.seed, reads_corpus=True)
    step = next(s for s in plan if s.name == "corpus")
    work = tmp_path / "work"
    work.mkdir()
    output = step.stage.compute(step.slice, {}, work)
    assert _ids(work / "corpus.jsonl") == HEAD_IDS and output.counts["in"] == 6
    report = json.loads((work / "filters.json").read_text())
    assert report["files"] == 2 and report["source"] == "allenai/dolma"
    assert next(f for f in report["filters"] if f["filter"] == "max_tokens")["in"] == 6
    assert "bucket" not in [f["filter"] for f in report["filters"]]  # chosen by file name, not by a record field


def test_hub_and_https_locations_resolve_without_a_network(tmp_path: Path) -> None:
    assert url_list_location("urls/v1_6.txt", "allenai/dolma", None) == "hf://datasets/allenai/dolma/urls/v1_6.txt"
    (tmp_path / "urls").mkdir()
    (tmp_path / "urls" / "v1_6.txt").write_text(f"{DOLMA_BASE}/cc_en_head/cc_en_head-0000.json.gz\n")
    assert url_list_location("urls/v1_6.txt", "allenai/dolma", str(tmp_path)) == str(tmp_path / "urls" / "v1_6.txt")
    assert url_list_location("https://x.org/v1.txt", "allenai/dolma", str(tmp_path)) == "https://x.org/v1.txt"
    hub_url = "https://huggingface.co/datasets/allenai/dolma/resolve/main/data/common-crawl/cc_en_head/cc_en_head-0003.json.gz"
    assert mirror_candidates(hub_url, Path("/m")) == [
        Path("/m/datasets/allenai/dolma/resolve/main/data/common-crawl/cc_en_head/cc_en_head-0003.json.gz"),
        Path("/m/data/common-crawl/cc_en_head/cc_en_head-0003.json.gz"),
        Path("/m/cc_en_head-0003.json.gz"),
    ]
    # a list of https URLs without a mirror streams them over https through fsspec (nothing is fetched here)
    url_list, _ = write_dolma(tmp_path / "d")
    cfg = CorpusConfig(source="allenai/dolma", url_list=str(url_list), perplexity_bucket="tail")
    source = resolve_source(cfg)
    assert source.folder == f"{DOLMA_BASE}/cc_en_tail" and source.files == ("cc_en_tail-0000.json.gz", "cc_en_tail-0001.json.gz")
    reader = make_reader(source, cfg, "raise", tasks=2)[0]
    assert type(reader.data_folder.fs).__name__ == "HTTPFileSystem" and reader.data_folder.path == f"{DOLMA_BASE}/cc_en_tail"


def test_bad_locations_fail_in_one_line_naming_the_key(tmp_path: Path) -> None:
    url_list, mirror = write_dolma(tmp_path)

    def error(**kw) -> str:
        with pytest.raises(DataError) as info:
            resolve_source(CorpusConfig(**({"source": "allenai/dolma", "perplexity_bucket": "head"} | kw)))
        assert "\n" not in str(info.value)
        return str(info.value)

    assert error(url_list=str(tmp_path / "v9.txt")).startswith("corpus.url_list: URL list")
    assert error(url_list=str(url_list), mirror=str(tmp_path / "none")).startswith("corpus.mirror: mirror folder")
    assert error(url_list=str(url_list), mirror=str(tmp_path / "urls")).startswith("corpus.mirror: https://olmo-data.org")
    assert error(url_list="urls/v1.txt").startswith("corpus.url_list: cannot read URL list hf://datasets/allenai/dolma/urls/v1.txt")
    assert error(url_list=str(url_list), mirror=str(mirror), perplexity_bucket="top").startswith("corpus.perplexity_bucket:")
    assert error(source="allenai/c4").startswith("corpus.glob: hub dataset allenai/c4 is read from its data files")
    assert error(source="allenai/c4", glob="en/*.json.gz").startswith("corpus.glob: cannot list hf://datasets/allenai/c4")
    assert error(source=str(mirror), url_list=str(url_list)).startswith("corpus.url_list: lists a hub dataset's files")
    with pytest.raises(DataError, match=r"^corpus\.mirror: mirror folder"):  # the run's check before any stage
        check_local_inputs(CorpusConfig(mirror=str(tmp_path / "none")), SeedConfig(), reads_corpus=True)
    with pytest.raises(DataError, match=r"^seed\.mirror: mirror folder"):
        check_local_inputs(CorpusConfig(), SeedConfig(source="oasst1", mirror=str(tmp_path / "none")), reads_corpus=True)


def test_c4_reads_the_train_files_of_a_local_copy(compose_cfg, tmp_path: Path) -> None:
    mirror = write_c4(tmp_path / "c4")
    cfg = compose_cfg("corpus=c4", f"corpus.mirror={mirror}")
    corpus = CorpusConfig(**OmegaConf.to_container(cfg.corpus))
    assert resolve_source(corpus).files == ("en/c4-train.00000-of-01024.json.gz", "en/c4-train.00001-of-01024.json.gz")
    build_corpus(corpus, "raise", tmp_path / "out" / "corpus.jsonl")
    urls = _ids(tmp_path / "out" / "corpus.jsonl")  # id_field: url
    assert len(urls) == 6 and all(u.startswith("https://example.org/c4/train/") for u in urls)


def test_oasst1_seed_reads_the_train_parquet_of_a_local_copy(compose_cfg, tmp_path: Path) -> None:
    mirror = write_oasst1(tmp_path / "oasst1")
    cfg = compose_cfg("seed=oasst1", f"seed.mirror={mirror}", "seed.size=null")
    pairs = load_seed(SeedConfig(**OmegaConf.to_container(cfg.seed)))
    assert [p["id"] for p in pairs] == [f"oasst1-train-root-{t}" for t in range(8)]
    assert all(p["output"].startswith("Reply of rank 0") for p in pairs)
    with pytest.raises(DataError, match=r"^seed\.hub_files: data/validation-.* is oasst1's validation split"):
        load_seed(SeedConfig(source="oasst1", mirror=str(mirror), hub_files="data/*.parquet"))
    with pytest.raises(DataError, match=r"^seed\.hub_files: cannot list hf://datasets/OpenAssistant/oasst1"):
        load_seed(SeedConfig(source="oasst1"))  # offline, no mirror


@pytest.mark.slow  # imports torch (the model registry)
def test_corpus_tokenizer_takes_registry_names() -> None:
    from bft.models.registry import ModelNotFoundError, resolve_model_path, resolve_tokenizer_path

    assert resolve_tokenizer_path("tiny") == resolve_model_path("tiny")
    assert resolve_tokenizer_path("llama2_7b") == "meta-llama/Llama-2-7b-hf"
    assert resolve_tokenizer_path("hf-internal-testing/llama-tokenizer") == "hf-internal-testing/llama-tokenizer"
    with pytest.raises(ModelNotFoundError, match="tokenizer 'no_such_name'"):
        resolve_tokenizer_path("no_such_name")


@pytest.mark.slow  # imports the pipeline stack
def test_a_run_names_a_missing_mirror_before_any_work(compose_cfg, tmp_path: Path) -> None:
    """`bft corpus=dolma corpus.mirror=<missing>`: the run stops on its first line, before the seed stage."""
    from bft.pipeline.runner import run_pipeline

    artifacts = tmp_path / "artifacts"
    cfg = compose_cfg("debug=smoke", "corpus=dolma", f"corpus.mirror={tmp_path / 'none'}", f"run.artifacts_dir={artifacts}")
    with pytest.raises(DataError, match=rf"^corpus\.mirror: mirror folder {tmp_path / 'none'} not found$"):
        run_pipeline(cfg, tmp_path / "run")
    assert not artifacts.exists()
