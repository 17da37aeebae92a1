"""``bft export`` of a real smoke run (tiny model): Parquet sets ``datasets`` opens, a model ``from_pretrained`` loads,
both with their cards; ``--push-to-hub`` through an injected test-only hub API; and the run's W&B offline folder
holds one job per computed stage with its lineage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bft.config.validate import ConfigError
from bft.export.cli import export, parse_args

pytestmark = pytest.mark.slow  # loads a model or starts a process (make test-fast skips it)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One full smoke run with W&B offline, as ``bft debug=smoke logger=wandb_offline`` runs it."""
    import wandb
    from helpers.in_process import run_in_process

    root = tmp_path_factory.mktemp("export")
    run_dir = root / "run"
    ctx = run_in_process(run_dir, "debug=smoke", "logger=wandb_offline", f"run.artifacts_dir={root / 'artifacts'}")
    wandb.teardown()  # flush the offline run files
    return {"root": root, "run_dir": run_dir, "ctx": ctx}


def test_export_run_folder_gives_loadable_dataset_and_model_with_cards(smoke_run, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard, ModelCard
    from transformers import AutoModelForCausalLM

    result = export(parse_args([f"run={smoke_run['run_dir']}", "--out", str(tmp_path / "out")]))
    dataset_dir = Path(result["dataset"])
    assert not (tmp_path / "out.partial").exists()
    ctx = smoke_run["ctx"]
    generated = load_dataset(str(dataset_dir), "generated", split="train")
    assert {"id", "text", "instruction", "score", "output"} <= set(generated.column_names)
    assert len(generated) == ctx.artifacts["rewrite"].manifest["counts"]["out"]
    train = load_dataset("parquet", data_files=str(dataset_dir / "train.parquet"), split="train")
    assert {"prompt", "completion"} <= set(train.column_names)
    assert len(train) == ctx.artifacts["train_data"].manifest["counts"]["out"]
    curated = load_dataset(str(dataset_dir), "curated", split="train")
    assert len(curated) == ctx.artifacts["curate_0"].manifest["counts"]["out"]

    card = DatasetCard.load(dataset_dir / "README.md")
    assert {c["config_name"] for c in card.data.configs} == {"curated", "generated", "train"}
    for needed in ("Sources and licences", "Decontamination", "Models used", "candidates scored / kept", "embedded"):
        assert needed in card.text, needed

    model_dir = Path(result["model"])
    assert result["merged"] and not (model_dir / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size > 0
    model_card = ModelCard.load(model_dir / "README.md")
    win_rate = round(ctx.summary["win_rate"], 2)
    assert f"| win rate | {win_rate} |" in model_card.text and "judge (annotator) | local" in model_card.text
    assert "sft.lr" in model_card.text and "peft.r" in model_card.text
    assert model_card.data.pipeline_tag == "text-generation" and model_card.data.base_model is None  # tiny: made here
    [result_row] = [r for r in model_card.data.eval_results if r.metric_type == "win_rate"]
    assert result_row.metric_value == win_rate and "judge local" in result_row.metric_name
    assert "## Usage" in model_card.text and "Answer in the style of an AI Assistant." in model_card.text
    assert card.data.license == "apache-2.0" and card.data.task_categories == ["text-generation"]
    assert card.data.size_categories == ["n<1K"]


def test_model_card_front_matter_names_the_hub_base_and_its_licence(smoke_run, tmp_path):
    from huggingface_hub import ModelCard

    from bft.export.cards import model_card
    from bft.export.resolve import resolve_run

    artifacts, _ = resolve_run(str(smoke_run["run_dir"]), "artifacts")
    for base, hub_id, licence in (
        ("smollm2_135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
        ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf", "llama2"),
        (str(tmp_path), None, None),  # a local folder is no hub id, whatever its name
    ):
        model_card(artifacts, base, True, "me/bft-data").save(tmp_path / "README.md")
        loaded = ModelCard.load(tmp_path / "README.md")
        assert (loaded.data.base_model, loaded.data.license) == (hub_id, licence), base
        assert loaded.data.datasets == ["me/bft-data"] and loaded.data.eval_results
        assert 'from_pretrained("me/bft")' in loaded.text


def test_dataset_card_of_mixed_licences_links_a_licence_file(smoke_run, tmp_path, monkeypatch):
    from bft.export import cards

    monkeypatch.setitem(cards.KNOWN_LICENCES, "embedded", "odc-by")
    monkeypatch.setattr(cards, "input_sources", lambda artifacts: {"seed": "oasst1", "corpus": "embedded"})
    result = export(parse_args([f"run={smoke_run['run_dir']}", "--out", str(tmp_path / "out"), "--no-model"]))
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(Path(result["dataset"]) / "README.md")
    assert (card.data.license, card.data.get("license_name"), card.data.get("license_link")) == (
        "other",
        "mixed-sources",
        "LICENSE.md",
    )
    licence_text = (Path(result["dataset"]) / "LICENSE.md").read_text()
    assert "oasst1 - apache-2.0" in licence_text and "embedded - odc-by" in licence_text


def test_export_by_key_as_adapter_and_push_to_a_fake_hub(smoke_run, tmp_path):
    final_key = smoke_run["ctx"].artifacts["final_model"].key
    hub = FakeHubApi(tmp_path / "hub")
    args = parse_args(
        [
            final_key,
            "--artifacts-dir",
            str(smoke_run["root"] / "artifacts"),
            "--out",
            str(tmp_path / "out"),
            "--adapter",
            "--push-to-hub",
            "me/bft-smoke",
        ]
    )
    result = export(args, api=hub)
    assert (Path(result["model"]) / "adapter_config.json").is_file() and not result["merged"]
    assert "library_name: peft" in (Path(result["model"]) / "README.md").read_text()
    assert hub.repos == {("me/bft-smoke-data", "dataset"), ("me/bft-smoke", "model")}
    assert (hub.root / "dataset" / "me/bft-smoke-data" / "generated.parquet").is_file()
    assert (hub.root / "model" / "me/bft-smoke" / "README.md").is_file()
    # started from the final model: no evaluation in its lineage, and the card says so
    assert "not evaluated" in (Path(result["model"]) / "README.md").read_text()


def test_export_of_an_unknown_key_is_one_line(tmp_path):
    (tmp_path / "artifacts").mkdir()
    with pytest.raises(ConfigError, match="no finished artifact with this key"):
        export(parse_args(["run=abc123", "--artifacts-dir", str(tmp_path / "artifacts")]))


def test_wandb_offline_folder_of_a_real_run_has_one_job_per_computed_stage(smoke_run):
    from helpers.wandb_offline import read_jobs

    ctx = smoke_run["ctx"]
    jobs = read_jobs(smoke_run["run_dir"])
    computed = sorted(a.stage for a in ctx.artifacts.values() if not a.reused)
    assert sorted(j.job_type for j in jobs if j.job_type != "pipeline") == computed
    logged = {name: job for job in jobs for name in job.logged}
    for artifact in ctx.artifacts.values():
        job = logged[f"{artifact.stage}-{artifact.key}"]
        upstream = artifact.manifest.get("upstream", {})
        used_keys = sorted(name.rsplit("-", 1)[1] for name in job.used)
        assert used_keys == sorted(upstream.values()), (artifact.stage, job.used, upstream)
    pipeline = next(j for j in jobs if j.job_type == "pipeline")
    assert len(pipeline.used) == len(ctx.artifacts) and len({j.group for j in jobs}) == 1


class FakeHubApi:
    """Test-only stand-in for ``huggingface_hub.HfApi``: repos are folders under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.repos: set[tuple[str, str]] = set()

    def create_repo(self, repo_id: str, repo_type: str, private: bool, exist_ok: bool) -> None:
        self.repos.add((repo_id, repo_type))

    def upload_folder(self, folder_path: str, repo_id: str, repo_type: str, commit_message: str) -> None:
        assert (repo_id, repo_type) in self.repos
        shutil.copytree(folder_path, self.root / repo_type / repo_id, dirs_exist_ok=True)
        json.dumps(commit_message)
