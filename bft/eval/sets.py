"""Eval sets: the AlpacaEval instructions with their reference outputs, as a list of dicts.

``ae1`` (reference text_davinci_003) and ``ae2`` (reference gpt4_1106_preview) are the raw JSON files of the
``tatsu-lab/alpaca_eval`` hub dataset, fetched with ``hf_hub_download`` (the dataset *script* is refused by
``datasets>=4``). ``embedded`` is the small set shipped in the package; anything else is a local JSON/JSONL file in
alpaca_eval format (instruction, output, generator, dataset).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from bft.data.io import DataError, read_records

HUB_REPO = "tatsu-lab/alpaca_eval"
HUB_FILES: dict[str, str] = {
    "ae1": "alpaca_eval.json",  # reference outputs: text_davinci_003 (AlpacaEval 1.0, the papers' metric)
    "ae2": "alpaca_eval_gpt4_baseline.json",  # reference outputs: gpt4_1106_preview (AlpacaEval 2.0)
}
EMBEDDED_PATH = Path(__file__).resolve().parent.parent / "data" / "embedded" / "eval.jsonl"
REQUIRED_FIELDS = ("instruction", "output")


class EvalSetError(ValueError):
    """An eval set that cannot be loaded; the message is one line and says what to do."""


def normalise_records(records: list[dict[str, Any]], source: str, default_generator: str) -> list[dict[str, Any]]:
    """Check the alpaca_eval fields and fill ``generator`` / ``dataset`` where absent."""
    out = []
    for i, record in enumerate(records):
        missing = [f for f in REQUIRED_FIELDS if not isinstance(record.get(f), str)]
        if missing:
            raise EvalSetError(f"{source}: record {i} lacks string field(s) {', '.join(missing)}")
        row = dict(record)
        row.setdefault("generator", default_generator)
        row.setdefault("dataset", "unknown")
        out.append(row)
    return out


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # name resolution happens at the proxy
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def download_hub_file(filename: str, what: str, hint: str = "pass a local alpaca_eval-format JSON/JSONL file instead") -> Path:
    """A file of the ``tatsu-lab/alpaca_eval`` dataset repo: from the HF cache, else from the hub if reachable."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=HUB_REPO, repo_type="dataset", filename=filename, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    if not _hub_reachable():
        raise EvalSetError(f"{what}: cannot download {HUB_REPO}/{filename} (offline and not in the Hugging Face cache); {hint}")
    try:
        return Path(hf_hub_download(repo_id=HUB_REPO, repo_type="dataset", filename=filename))
    except Exception as e:  # noqa: BLE001 - any hub failure becomes the same actionable message
        raise EvalSetError(f"{what}: download of {HUB_REPO}/{filename} failed ({type(e).__name__}); {hint}") from e


def load_eval_set(name_or_path: str, max_instances: int | None = None) -> list[dict[str, Any]]:
    """Load ``ae1`` | ``ae2`` | ``embedded`` | a local file; keep the first ``max_instances`` (deterministic)."""
    if name_or_path in HUB_FILES:
        path = download_hub_file(HUB_FILES[name_or_path], f"eval set '{name_or_path}'")
        default_generator = "text_davinci_003" if name_or_path == "ae1" else "gpt4_1106_preview"
    elif name_or_path == "embedded":
        path = EMBEDDED_PATH
        if not path.exists():
            raise EvalSetError(f"embedded eval set {path} is missing from the package")
        default_generator = "reference"
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise EvalSetError(f"eval set '{name_or_path}' is neither ae1, ae2, embedded nor an existing JSON/JSONL file")
        default_generator = "reference"
    try:
        loaded = read_records(path).records
    except DataError as err:
        raise EvalSetError(str(err)) from None
    records = normalise_records(loaded, str(path), default_generator)
    if max_instances is not None:
        if max_instances < 1:
            raise EvalSetError(f"max_instances must be >= 1, got {max_instances}")
        records = records[:max_instances]
    return records
