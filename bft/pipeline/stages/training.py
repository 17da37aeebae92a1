"""Training stages: the backward model, the curation models (M0 = seed model, M_i) and the final model.

Each trains its own role's base model (``backward_model``, ``curation_model``, ``final_model``; see
``bft.pipeline.roles``) with its own ``sft.<stage>`` hyperparameters.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bft.artifacts.store import Artifact, StageOutput
from bft.data.io import read_jsonl
from bft.errors import PipelineError
from bft.pipeline.stage import TRAINER_UNKEYED, Stage
from bft.pipeline.stages.common import Record, tagged_examples


def _train(model: DictConfig, sft: DictConfig, c: DictConfig, examples: list[Record], work: Path, what: str) -> StageOutput:
    """Fine-tune in this process (one CPU device) or as a launched job (several devices, GPUs, Slurm: bft.sft.launch)."""
    from bft.sft.launchers import resolve_launcher

    if not examples:
        raise PipelineError(f"{what}: no training examples")
    trainer = OmegaConf.to_object(c.trainer)
    if resolve_launcher(trainer) == "inprocess":
        from bft.sft.train import train_sft

        result = train_sft(
            examples,
            model.name,
            work,
            OmegaConf.to_object(sft),
            OmegaConf.to_object(c.peft),
            trainer,
            seed=c.run.seed,
            model_dtype=model.dtype,
        )
    else:
        result = _launch(model, sft, c, examples, work, what)
    return StageOutput(
        counts={"in": len(examples), "out": len(examples)},
        metrics=dict(result.metrics),
        extra={"base_model": model.name, "is_adapter": result.is_adapter},
    )


def _launch(model: DictConfig, sft: DictConfig, c: DictConfig, examples: list[Record], work: Path, what: str):
    """Write the training job (examples + settings) under ``work/launch``, run it, and remove the folder once it
    succeeded (the artifact's files do not depend on how it was trained); a failure keeps it for its logs."""
    import os
    import shutil

    from bft.data.io import write_jsonl_atomic
    from bft.models.chat_templates import registered_setting
    from bft.sft.launch import LAUNCH_DIR, TrainJob, launch_training

    folder = work / LAUNCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    examples_file = folder / "examples.jsonl"
    write_jsonl_atomic(examples_file, examples)
    job = TrainJob(
        examples=str(examples_file),
        base_model=model.name,
        out_dir=str(work),
        stage=OmegaConf.to_container(sft, resolve=True),
        peft=OmegaConf.to_container(c.peft, resolve=True),
        trainer=OmegaConf.to_container(c.trainer, resolve=True),
        seed=int(c.run.seed),
        model_dtype=model.dtype,
        chat_template=list(registered_setting(model.name)),
        verbose=os.environ.get("BFT_VERBOSE") == "1",
    )
    result = launch_training(job, what)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def compute_backward_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    from bft.prompts import backtranslation_prompt

    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    examples = [{"prompt": backtranslation_prompt(r["output"]), "completion": r["instruction"]} for r in seed]
    return _train(c.backward_model, c.sft.backward, c, examples, work, "backward model")


def compute_seed_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    return _train(c.curation_model, c.sft.seed, c, tagged_examples(seed, c.sft.seed_tag), work, "seed model")


def compute_curation_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    """Humpback's M_i: the curation base model fine-tuned on seed + the pairs kept by M_{i-1}."""
    seed = read_jsonl(upstream["seed"].file("seed.jsonl"))
    kept = [{**r, "output": r["text"]} for r in read_jsonl(upstream["curated"].export("pairs"))]
    examples = tagged_examples(seed, c.sft.seed_tag) + tagged_examples(kept, c.sft.web_tag)
    return _train(c.curation_model, c.sft.seed, c, examples, work, "curation model")


def compute_final_model(c: DictConfig, upstream: dict[str, Artifact], work: Path) -> StageOutput:
    train = read_jsonl(upstream["train_data"].file("train.jsonl"))
    examples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in train]
    return _train(c.final_model, c.sft.final, c, examples, work, "final model")


_COMMON = ("peft", "trainer", "run.seed")


def _training_stage(name: str, reads: tuple[str, ...], settings: tuple[str, ...], compute, version: int) -> Stage:
    return Stage(name, reads, ("model/",), (*settings, *_COMMON), compute, unkeyed=TRAINER_UNKEYED, version=version)


BACKWARD_MODEL = _training_stage("backward_model", ("seed",), ("backward_model", "sft.backward"), compute_backward_model, version=1)
SEED_MODEL = _training_stage("seed_model", ("seed",), ("curation_model", "sft.seed", "sft.seed_tag"), compute_seed_model, version=1)
CURATION_MODEL = _training_stage(
    "curation_model",
    ("seed", "curated"),
    ("curation_model", "sft.seed", "sft.seed_tag", "sft.web_tag"),
    compute_curation_model,
    version=1,
)
FINAL_MODEL = _training_stage("final_model", ("train_data",), ("final_model", "sft.final"), compute_final_model, version=1)
