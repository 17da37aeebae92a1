"""Log a run's samples to W&B: generated pairs, curation score histograms, the dataset and final model artifacts."""

from __future__ import annotations

from bft.data.io import read_jsonl
from bft.pipeline.context import RunContext


def log_samples(ctx: RunContext) -> None:
    if not ctx.logger.enabled:
        return
    generated = ctx.artifacts.get("rewrite") or ctx.artifacts["baseline_data"]
    rows = read_jsonl(generated.file("generated.jsonl"))
    ctx.logger.log_table("samples", rows, ["id", "text", "instruction", "score", "output"])
    for name in [n for n in ctx.artifacts if n.startswith("curate_")]:
        histogram = ctx.artifacts[name].manifest["metrics"].get("score_histogram")
        if histogram:
            ctx.logger.log_histogram(f"{name}/score_histogram", histogram)
    ctx.logger.log_artifact(f"curated-{generated.key}", "dataset", generated.file("generated.jsonl"))
    final = ctx.artifacts.get("final_model")
    if final is not None:
        ctx.logger.log_artifact(f"model-{final.key}", "model", final.file("model"))
