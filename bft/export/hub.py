"""``--push-to-hub``: upload the exported folders with huggingface_hub (for users with a network and a token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def push(folder: Path, repo_id: str, repo_type: str, api: Any = None, private: bool = True) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; ``api`` defaults to ``huggingface_hub.HfApi()``."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message="bft export")
    return f"{repo_type}:{repo_id}"
