"""FOR TESTS ONLY: tiny local copies of the hub corpora in their real layouts, file names and record schemas.

- Dolma: a release's URL list (``urls/v1_6.txt``: one ``https://olmo-data.org/dolma-v1_6/<subset>/<subset>-NNNN.json.gz``
  a line) and a mirror folder holding each listed file at its URL path; gzipped JSONL records with ``id, text,
  added, created, source, metadata``. Or the list as ``file://`` URLs of the files themselves.
- C4 (``allenai/c4``): ``en/c4-train.NNNNN-of-01024.json.gz`` and ``en/c4-validation...`` (``text, timestamp, url``).
- oasst1 (``OpenAssistant/oasst1``): ``data/train-00000-of-00001-<hash>.parquet`` and ``data/validation-...``,
  message rows with the hub schema.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

DOLMA_BASE = "https://olmo-data.org/dolma-v1_6"
WORDS = [
    *("river", "town", "stone", "bridge", "farmer", "cart", "spring", "water", "snow", "hill", "valley", "market"),
    *("bread", "mill", "wheel", "road", "school", "church", "winter", "summer", "harvest", "field", "orchard"),
    *("apple", "barley", "wool", "sheep", "horse", "lantern", "window", "garden", "baker", "smith", "tailor"),
]


def document(seed: int) -> str:
    """About 900 characters of plain English prose with its own vocabulary (passes the cleaning rules, no duplicates)."""
    rng = random.Random(seed)
    place, thing = rng.sample(WORDS, 2)
    lines = []
    for k in range(6):
        a, b = rng.sample(WORDS, 2)
        lines.append(
            f"The {place} number {seed} keeps a record of the {thing} and its {a} near the {b}, and visitors in year "
            f"{1900 + 7 * seed + k} wrote that the {a} changed the way people used the {thing}."
        )
    return f"A short history of the {place} {seed}\n\n" + "\n".join(lines)


def _gz_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0))


def dolma_record(subset: str, shard: int, i: int, seed: int) -> dict:
    return {
        "id": f"{subset}-{shard:04d}-{i}",
        "text": document(seed),
        "added": "2023-08-14T21:18:08.366Z",
        "created": "2019-03-18T00:00:00Z",
        "source": "common-crawl",
        "metadata": {"url": f"https://example.org/{subset}/{shard}/{i}", "warc_date": "2019-03-18"},
    }


def write_dolma(
    root: Path,
    subsets: tuple[str, ...] = ("cc_en_head", "cc_en_middle", "cc_en_tail", "c4", "books"),
    shards: int = 2,
    docs: int = 3,
    file_urls: bool = False,
    extra: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """(URL list, mirror root). Subsets interleaved in the list as in a real release's list, head among the others.

    ``file_urls``: the list holds ``file://`` URLs of the files (no mirror needed); ``extra``: documents by name,
    first in the first head file (id ``cc_en_head-<name>``)."""
    mirror = root / "mirror"
    urls = []
    seed = 0
    for shard in range(shards):
        for subset in subsets:
            rel = f"dolma-v1_6/{subset}/{subset}-{shard:04d}.json.gz"
            rows = []
            if shard == 0 and subset == "cc_en_head":
                rows += [
                    {**dolma_record(subset, 0, 0, 0), "id": f"{subset}-{name}", "text": text} for name, text in (extra or {}).items()
                ]
            for i in range(docs):
                rows.append(dolma_record(subset, shard, i, seed))
                seed += 1
            _gz_jsonl(mirror / rel, rows)
            urls.append((mirror / rel).as_uri() if file_urls else f"{DOLMA_BASE}/{subset}/{subset}-{shard:04d}.json.gz")
    url_list = root / "urls" / "v1_6.txt"
    url_list.parent.mkdir(parents=True, exist_ok=True)
    url_list.write_text("\n".join(urls) + "\n")
    return url_list, mirror


def write_c4(root: Path, shards: int = 2, docs: int = 3, extra: dict[str, str] | None = None) -> Path:
    """A copy of ``allenai/c4``'s ``en/`` train and validation files; returns the mirror root. ``extra``: documents by
    name, first in the first train file (URL ``https://example.org/c4/train/<name>``)."""
    seed = 1000
    for split, n in (("train", shards), ("validation", 1)):
        for k in range(n):
            rows = []
            if split == "train" and k == 0:
                rows += [
                    {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/c4/train/{name}"}
                    for name, text in (extra or {}).items()
                ]
            for i in range(docs):
                url = f"https://example.org/c4/{split}/{k}/{i}"
                rows.append({"text": document(seed), "timestamp": "2019-04-25T12:57:54Z", "url": url})
                seed += 1
            total = 1024 if split == "train" else 8
            _gz_jsonl(root / "en" / f"c4-{split}.{k:05d}-of-{total:05d}.json.gz", rows)
    return root


def oasst_rows(split: str, trees: int) -> list[dict]:
    """oasst1 message rows (hub schema): each tree a prompter root and two ranked replies, plus one German tree."""
    rows = []

    def message(mid, parent, tree, role, text, lang="en", rank=None):
        return {
            "message_id": mid, "parent_id": parent, "user_id": "u", "created_date": "2023-02-05T14:23:50.983374+00:00",
            "text": text, "role": role, "lang": lang, "review_count": 3, "review_result": True, "deleted": False,
            "rank": rank, "synthetic": False, "model_name": None,
            "detoxify": {"toxicity": 0.0, "severe_toxicity": 0.0, "obscene": 0.0, "identity_attack": 0.0, "insult": 0.0,
                         "threat": 0.0, "sexual_explicit": 0.0},
            "message_tree_id": tree, "tree_state": "ready_for_export", "emojis": None, "labels": None,
        }  # fmt: skip

    for t in range(trees):
        root, tree = f"{split}-root-{t}", f"{split}-tree-{t}"
        rows.append(message(root, None, tree, "prompter", f"How does the {WORDS[t]} number {t} work?"))
        for rank in (1, 0):
            text = f"Reply of rank {rank}: the {WORDS[t]} {t} works well."
            rows.append(message(f"{split}-reply-{t}-{rank}", root, tree, "assistant", text, rank=rank))
    rows.append(message(f"{split}-root-de", None, f"{split}-tree-de", "prompter", "Wie geht das?", lang="de"))
    return rows


def write_oasst1(root: Path, trees: int = 8) -> Path:
    """A copy of ``OpenAssistant/oasst1``'s Parquet data files (train and validation); returns the mirror root."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True, exist_ok=True)
    names = {"train": "train-00000-of-00001-b42a775f407cee45", "validation": "validation-00000-of-00001-134b8fd0c89408b6"}
    for split, name in names.items():
        table = pa.Table.from_pylist(oasst_rows(split, trees if split == "train" else 2))
        pq.write_table(table, root / "data" / f"{name}.parquet")
    return root
