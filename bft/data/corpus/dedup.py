"""Near-duplicate removal with datatrove's four MinHash stages (signatures, buckets, clusters, filter).

Signatures and buckets are written to disk and merged bucket by bucket, so the corpus never has to fit in one
machine's memory; each stage runs on the configured executor. One document per cluster is kept.
"""

from __future__ import annotations

import os
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.utils.hashing import HashConfig

from bft.data.corpus.langid import OfflineEnglishTokenizer

MINHASH_SEED = 1
SHINGLE_WORDS = 5


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(buckets, hashes per bucket) with buckets * hashes <= ``num_perm`` whose LSH threshold (1/b)^(1/r) is
    closest to ``threshold``."""
    best = min(
        ((b, r) for r in range(1, num_perm + 1) for b in range(1, num_perm // r + 1)),
        key=lambda br: (abs((1 / br[0]) ** (1 / br[1]) - threshold), -br[0] * br[1]),
    )
    return best


def minhash_config(threshold: float, num_perm: int) -> MinhashConfig:
    buckets, per_bucket = lsh_bands(threshold, num_perm)
    return MinhashConfig(
        n_grams=SHINGLE_WORDS,
        num_buckets=buckets,
        hashes_per_bucket=per_bucket,
        seed=MINHASH_SEED,
        hash_config=HashConfig(precision=64, hash_fc="sha1"),  # xxhash>=4 refuses str
    )


class RankFileReader(PipelineStep):
    """Read back the datatrove JSONL that task ``rank`` wrote (``{rank:05d}.jsonl``); nothing if it wrote none."""

    type = "📖 - READER"
    name = "rank file"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        name = f"{rank:05d}.jsonl"
        if not os.path.isfile(os.path.join(self.folder, name)):
            return
        reader = JsonlReader(self.folder, glob_pattern=name, compression=None, add_file_path=False)
        yield from reader.read_file(name)


def signature_step(folder: str, config: MinhashConfig) -> PipelineStep:
    return MinhashDedupSignature(output_folder=folder, config=config, language=OfflineEnglishTokenizer())


def later_stages(scratch: str, config: MinhashConfig, filtered: str, exclusion_writer: Any) -> dict[str, Any]:
    """The pipelines after signatures: buckets (one task per bucket), clusters (one task), filter (per task)."""
    return {
        "buckets": [MinhashDedupBuckets(f"{scratch}/signatures", f"{scratch}/buckets", config=config)],
        "clusters": [MinhashDedupCluster(f"{scratch}/buckets", f"{scratch}/remove_ids", config=config)],
        "filter": [
            RankFileReader(filtered),
            MinhashDedupFilter(f"{scratch}/remove_ids", exclusion_writer=exclusion_writer),
        ],
    }
