"""Dataset and model cards (huggingface_hub ``DatasetCard`` / ``ModelCard``) from a run's manifests.

The front matter is what the Hub reads: licence (as the sources state it), ``base_model`` only for a hub id,
``datasets``, ``language``, ``pipeline_tag`` / ``task_categories``, ``size_categories`` and the AlpacaEval result as
``model-index`` with the judge named. Both cards show how to prompt the model: the tag it was trained with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bft.artifacts.store import Artifact

# licences of the inputs as their sources state them; anything else is reported as given (unknown)
KNOWN_LICENCES = {
    "embedded": "apache-2.0",  # written for this project, shipped inside the bft package under its licence
    "OpenAssistant/oasst1": "apache-2.0",
    "oasst1": "apache-2.0",
    "allenai/c4": "odc-by",
    "c4": "odc-by",
    "allenai/dolma": "odc-by",
    "dolma": "odc-by",
}


# base model -> (hub id it comes from, its licence); the embedded default is a local conversion of a hub model
KNOWN_MODELS = {
    "smollm2_135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
}
MODEL_LICENCE_PREFIXES = {"meta-llama/Llama-2-": "llama2", "HuggingFaceTB/SmolLM2-": "apache-2.0"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DATASET_LICENCE_FILE = "LICENSE.md"  # the dataset card's license_link when its sources' licences differ


def hub_base_model(name: str) -> str | None:
    """The hub id a base model comes from, or None for a local folder or a model made here (``tiny``)."""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name][0]
    if not _HUB_ID.match(name) or Path(name).expanduser().exists():
        return None
    return name


def model_licence(name: str) -> str | None:
    hub_id = hub_base_model(name) or ""
    return next((lic for prefix, lic in MODEL_LICENCE_PREFIXES.items() if hub_id.startswith(prefix)), None)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def inference_tag(artifacts: dict[str, Artifact]) -> str | None:
    """The tag the run put on eval prompts (``eval.inference_tag``): what users should add to theirs."""
    return _config(artifacts, "eval_outputs").get("eval", {}).get("inference_tag")


def usage_snippet(repo: str, tag: str | None) -> str:
    """How to prompt the model: the chat template it was trained with, and the tag as the user turn's last line."""
    tagged = f'instruction + "\\n\\n{tag}"' if tag else "instruction"
    lines = [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
        'instruction = "Give three tips for staying healthy."',
        f'messages = [{{"role": "user", "content": {tagged}}}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
        "print(tokenizer.decode(model.generate(inputs, max_new_tokens=256)[0, inputs.shape[1]:], skip_special_tokens=True))",
        "```",
    ]
    note = (
        f"Prompts must end with the tag the model was evaluated with, as their last line: `{tag}` (training "
        "prompts carried the seed tag on seed pairs and the web tag on generated ones, Humpback's tagging)."
        if tag
        else "The model was evaluated without a tag; its training prompts carried the seed and web tags."
    )
    return note + "\n\n" + "\n".join(lines)


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
    known = {v for v in lic.values() if v in _SPDX}
    single = known.pop() if len(known) == 1 and len(set(lic.values())) == 1 else None
    data = DatasetCardData(
        license=single or "other",
        license_name=None if single else "mixed-sources",
        license_link=None if single else DATASET_LICENCE_FILE,
        language=["en"],
        task_categories=["text-generation"],
        size_categories=[size_category(max(w["rows"] for w in written.values()))],
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
        "## Training with it",
        f"The `train` config carries the tags in its prompts. A model trained on it should be prompted with "
        f"`{inference_tag(artifacts) or 'no tag'}` as the last line of the user turn, as this run evaluated it.",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


_SPDX = {"apache-2.0", "odc-by", "mit", "cc-by-4.0", "llama2"}  # licences the Hub knows, among those we state
_CURATION_KEYS = ("scoring", "threshold", "top_k", "top_fraction")


def licence_file(artifacts: dict[str, Artifact]) -> str:
    """``LICENSE.md`` of an exported dataset whose sources carry different licences: each source's, as given."""
    rows = [f"- {role}: {src} - {licences(artifacts).get(role)}" for role, src in input_sources(artifacts).items()]
    return (
        "# Licences of this dataset's sources\n\nEach part keeps its source's licence, as the source states it:\n\n"
        + "\n".join(rows)
        + "\n"
    )


def _judge(evaluation: dict[str, Any]) -> str:
    return f"{evaluation.get('annotator')} ({evaluation.get('judge_model')})"


def eval_results(evaluation: dict[str, Any]) -> list:
    """AlpacaEval figures as ``model-index`` entries, the judge and reference named in each metric."""
    from huggingface_hub import EvalResult

    results = []
    for key, label in (("win_rate", "win rate"), ("length_controlled_winrate", "length-controlled win rate")):
        value = evaluation.get(key)
        if isinstance(value, int | float):
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Instruction following",
                    dataset_type="tatsu-lab/alpaca_eval",
                    dataset_name=f"AlpacaEval ({evaluation.get('n_total')} instructions)",
                    metric_type=key,
                    metric_value=round(float(value), 2),
                    metric_name=f"{label} vs {evaluation.get('reference')}, judge {_judge(evaluation)}",
                )
            )
    return results


def model_card(artifacts: dict[str, Artifact], base_model: str, merged: bool, dataset_ref: str | None):
    from huggingface_hub import ModelCard, ModelCardData

    final = artifacts["final_model"]
    config = final.manifest.get("config", {})
    evaluation = _metrics(artifacts, "evaluate")
    name = f"bft-{final.key}"
    results = eval_results(evaluation)
    hub_base = hub_base_model(base_model)
    data = ModelCardData(
        model_name=name,
        base_model=hub_base,
        license=model_licence(base_model),
        language=["en"],
        pipeline_tag="text-generation",
        library_name="transformers" if merged else "peft",
        tags=["bft", "instruction-tuning", "alpaca-eval"],
        datasets=[dataset_ref] if dataset_ref else None,
        eval_results=results or None,
    )
    sft, peft = config.get("sft", {}), config.get("peft", {})
    sft = sft.get("final", sft)  # the final model's slice holds sft.final (older manifests: sft itself)
    precision = config.get("precision", config.get("trainer", {}).get("precision"))
    train_counts = _counts(artifacts, "train_data")
    eval_rows = [
        ("win rate", _round(evaluation.get("win_rate"))),
        ("standard error", _round(evaluation.get("standard_error"))),
        ("length-controlled win rate", _round(evaluation.get("length_controlled_winrate"))),
        ("judge (annotator)", _judge(evaluation)),
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
        "## Usage",
        usage_snippet(dataset_ref.removesuffix("-data") if dataset_ref else "<this folder>", inference_tag(artifacts)),
    ]
    if hub_base is None:
        sections.insert(2, f"The base model `{base_model}` is a local folder or a model made by bft, not a hub id.")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def _describe_set(written: dict[str, Any]) -> str:
    return f"{written['rows']} rows; columns {', '.join(written['columns'])} (from {written['stage']}/{written['key']})"
