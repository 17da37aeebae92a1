"""Dataset and model cards (huggingface_hub ``DatasetCard`` / ``ModelCard``) from a run's manifests."""

from __future__ import annotations

from typing import Any

from bft.artifacts.store import Artifact

# licences of the inputs as their sources state them; anything else is reported as given (unknown)
KNOWN_LICENCES = {
    "embedded": "written for this project and shipped inside the bft package (the package's licence)",
    "OpenAssistant/oasst1": "apache-2.0",
    "oasst1": "apache-2.0",
    "allenai/c4": "odc-by",
    "c4": "odc-by",
    "allenai/dolma": "odc-by",
    "dolma": "odc-by",
}


def _config(artifacts: dict[str, Artifact], stage: str) -> dict[str, Any]:
    artifact = artifacts.get(stage)
    return artifact.manifest.get("config", {}) if artifact else {}


def _counts(artifacts: dict[str, Artifact], stage: str) -> dict[str, Any]:
    artifact = artifacts.get(stage)
    return artifact.manifest.get("counts", {}) if artifact else {}


def _metrics(artifacts: dict[str, Artifact], stage: str) -> dict[str, Any]:
    artifact = artifacts.get(stage)
    return artifact.manifest.get("metrics", {}) if artifact else {}


def input_sources(artifacts: dict[str, Artifact]) -> dict[str, str]:
    seed = _config(artifacts, "seed").get("seed", {})
    corpus = _config(artifacts, "corpus").get("corpus", {})
    sources = {}
    if seed:
        source = seed.get("source", "")
        sources["seed"] = seed.get("hub_dataset") if source == "oasst1" else source
    if corpus:
        sources["corpus"] = corpus.get("source", "")
    baseline = _config(artifacts, "baseline_data").get("file")
    if baseline:
        sources["baseline"] = baseline
    return sources


def licences(artifacts: dict[str, Artifact]) -> dict[str, str]:
    sources = input_sources(artifacts)
    return {role: KNOWN_LICENCES.get(str(src), f"as given by the user ({src}): not stated") for role, src in sources.items()}


def models_used(artifacts: dict[str, Artifact], summary: dict | None) -> dict[str, str]:
    final = artifacts.get("final_model")
    models = {"base model": str(final.manifest.get("base_model", "")) if final else ""}
    if summary:
        models["base model"] = models["base model"] or str(summary.get("run", {}).get("model", ""))
    for stage, role in (
        ("backward_model", "backward model (instruction generation)"),
        ("seed_model", "judge / seed model (self-curation)"),
        ("curation_model", "judge of the last curation iteration"),
    ):
        if stage in artifacts:
            models[role] = f"{stage}/{artifacts[stage].key} (LoRA/fine-tune of the base model on the seed data)"
    rewriter = _config(artifacts, "rewrite").get("rewriter", {})
    if rewriter:
        models["rewriter"] = f"{rewriter.get('name')} ({rewriter.get('mode')})"
    elif "rewrite" in artifacts:
        models["rewriter"] = "none (filtering only)"
    return {k: v for k, v in models.items() if v}


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


def dataset_card(artifacts: dict[str, Artifact], written: dict[str, dict[str, Any]], summary: dict | None):
    from huggingface_hub import DatasetCard, DatasetCardData

    lic = licences(artifacts)
    data = DatasetCardData(
        license="other",
        language=["en"],
        tags=["instruction-tuning", "backtranslation", "bft"],
        configs=[{"config_name": name, "data_files": f"{name}.parquet"} for name in written],
    )
    corpus_counts = _counts(artifacts, "corpus")
    curate = _metrics(artifacts, "curate")
    curation_cfg = _config(artifacts, "curate").get("curation", {})
    decon = _counts(artifacts, "train_data").get("decontaminated", {})
    sections = [
        "# bft instruction data",
        "Instruction-tuning data made by instruction back-and-forth translation (`bft`): a backward model writes an "
        "instruction for each web document, a seed model rates each pair and the best are kept, and a rewriter turns "
        "each kept document into an answer.",
        "## Configs",
        _table([(f"`{n}`", _describe_set(w)) for n, w in written.items()]),
        "## Sources and licences (as given)",
        _table([(role, f"{src} - licence: {lic.get(role, 'not stated')}") for role, src in input_sources(artifacts).items()]),
        "## Filters and counts",
        _table(
            [
                ("corpus documents in / kept", f"{corpus_counts.get('in')} / {corpus_counts.get('out')}"),
                ("corpus removals", corpus_counts.get("removed", {})),
                ("curation", ", ".join(f"{k}={v}" for k, v in curation_cfg.items() if v is not None and k in _CURATION_KEYS)),
                ("candidates scored / kept", f"{curate.get('candidates')} / {curate.get('kept')} ({curate.get('kept_fraction')})"),
                ("score histogram", curate.get("score_histogram")),
                ("rewrite in / out", f"{_counts(artifacts, 'rewrite').get('in')} / {_counts(artifacts, 'rewrite').get('out')}"),
                ("training set", _counts(artifacts, "train_data")),
            ]
        ),
        "## Decontamination against the evaluation set",
        _table([(k, v) for k, v in decon.items()] or [("removed", 0)]),
        "## Models used",
        _table(list(models_used(artifacts, summary).items())),
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


_CURATION_KEYS = ("scoring", "threshold", "top_k", "top_fraction")


def model_card(artifacts: dict[str, Artifact], base_model: str, merged: bool, dataset_ref: str | None):
    from huggingface_hub import ModelCard, ModelCardData

    final = artifacts["final_model"]
    config = final.manifest.get("config", {})
    evaluation = _metrics(artifacts, "evaluate")
    data = ModelCardData(
        base_model=base_model if "/" in base_model else None,
        library_name="transformers" if merged else "peft",
        tags=["bft", "instruction-tuning", "alpaca-eval"],
        datasets=[dataset_ref] if dataset_ref else None,
    )
    sft, peft = config.get("sft", {}), config.get("peft", {})
    sft = sft.get("final", sft)  # the final model's slice holds sft.final (older manifests: sft itself)
    precision = config.get("precision", config.get("trainer", {}).get("precision"))
    train_counts = _counts(artifacts, "train_data")
    eval_rows = [
        ("win rate", _round(evaluation.get("win_rate"))),
        ("standard error", _round(evaluation.get("standard_error"))),
        ("length-controlled win rate", _round(evaluation.get("length_controlled_winrate"))),
        ("judge (annotator)", f"{evaluation.get('annotator')} ({evaluation.get('judge_model')})"),
        ("reference", evaluation.get("reference")),
        ("instances", evaluation.get("n_total")),
    ]
    sections = [
        f"# bft model {final.key}",
        f"{'Merged weights' if merged else 'A PEFT adapter'} of `{base_model}` fine-tuned by `bft` on seed + generated "
        f"instruction data (final_model/{final.key}).",
        "## Training data",
        _table(
            [("training set", f"train_data/{final.manifest.get('upstream', {}).get('train_data')}"), ("counts", train_counts)]
            + [("dataset", dataset_ref)] * bool(dataset_ref)
        ),
        "## Hyperparameters",
        _table([*((f"sft.{k}", v) for k, v in sft.items()), *((f"peft.{k}", v) for k, v in peft.items()), ("precision", precision)]),
        "## Evaluation (AlpacaEval)",
        _table(eval_rows) if evaluation else "not evaluated",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def _describe_set(written: dict[str, Any]) -> str:
    return f"{written['rows']} rows; columns {', '.join(written['columns'])} (from {written['stage']}/{written['key']})"
