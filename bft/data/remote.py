"""Data files of hub datasets and URL lists, without loading scripts: where each file is and how it is opened.

Hub datasets are read from their data files (``datasets`` 4+ refuses loading scripts, and Dolma's hub repository
is one): a glob inside the repository (``hf://datasets/<id>/<glob>``), or a release's URL list (Dolma:
``urls/v1_6.txt``, one ``https://olmo-data.org/dolma-v1_6/cc_en_head/cc_en_head-0000.json.gz`` a line). Online the
files stream through fsspec (``hf://``, ``https://``); offline a ``mirror`` folder holds a copy: for a glob, the
repository's own layout (``huggingface-cli download <id> --local-dir <mirror>``); for a URL list, each URL's path
(``<mirror>/dolma-v1_6/cc_en_head/cc_en_head-0000.json.gz``, as the loading script's ``DOLMA_DATA_DIR``), the path
after ``/resolve/<revision>/`` of a hub URL, or the bare file name (``wget -P <mirror>`` of the whole list).
Every failure is one DataError naming the config key.
"""

from __future__ import annotations

import glob as globlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from bft.data.io import DataError

HF_DATASETS = "hf://datasets/"
_SCHEMES = ("hf://", "https://", "http://", "file://", "s3://", "gs://")


def is_url(location: str) -> bool:
    return location.startswith(_SCHEMES)


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path (the form of a hub dataset id)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).expanduser().exists()


def local_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL or a plain path; None for a remote URL."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    return None if is_url(url) else Path(url).expanduser()


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def url_list_location(url_list: str, repo: str | None, mirror: str | None) -> str:
    """Where a URL list is read: a URL or absolute/home path as given; a relative path is a file of the hub
    repository ``repo`` (``<mirror>/<path>`` when the mirror holds it, else ``hf://datasets/<repo>/<path>``)."""
    if is_url(url_list) or url_list.startswith(("/", "~")) or repo is None or not is_hub_id(repo):
        return url_list
    if mirror and (Path(mirror).expanduser() / url_list).is_file():
        return str(Path(mirror).expanduser() / url_list)
    return f"{HF_DATASETS}{repo}/{url_list}"


def read_url_list(location: str, key: str) -> list[str]:
    """The URLs of a URL list (one a line; blank lines and ``#`` comments skipped), read through fsspec."""
    import fsspec

    path = local_path(location)
    if path is not None and not path.is_file():
        raise DataError(key, f"URL list {location} not found", "not_found")
    try:
        with fsspec.open(str(path) if path is not None else location, "rt", encoding="utf-8", compression="infer") as f:
            lines = [line.strip() for line in f]
    except Exception as err:  # fsspec backends raise their own errors (aiohttp, huggingface_hub, OSError)
        raise DataError(key, f"cannot read URL list {location} ({_reason(err)})", "not_found") from None
    urls = [line for line in lines if line and not line.startswith("#")]
    if not urls:
        raise DataError(key, f"URL list {location} lists no files", "empty")
    return urls


def mirror_candidates(url: str, mirror: Path) -> list[Path]:
    """Where a listed URL's file may be inside ``mirror``: its URL path, the path after a hub URL's
    ``/resolve/<revision>/``, then its bare file name."""
    path = unquote(urlparse(url).path).lstrip("/")
    found = [mirror / path]
    if "/resolve/" in path:
        after = path.split("/resolve/", 1)[1].split("/", 1)
        if len(after) == 2:
            found.append(mirror / after[1])
    found.append(mirror / os.path.basename(path))
    return found


def check_mirror(mirror: str, key: str) -> Path:
    root = Path(mirror).expanduser().resolve()
    if not root.is_dir():
        raise DataError(key, f"mirror folder {mirror} not found", "not_found")
    return root


def listed_files(urls: list[str], mirror: str | None, list_key: str, mirror_key: str) -> list[str]:
    """The file each URL names: a local path in the mirror (or of a ``file://`` URL), else the URL itself.
    Local files must exist (checked here, before any work); remote ones are opened when read."""
    root = check_mirror(mirror, mirror_key) if mirror else None
    files = []
    for url in urls:
        if root is not None:
            hit = next((p for p in mirror_candidates(url, root) if p.is_file()), None)
            if hit is None:
                looked = mirror_candidates(url, root)[0]
                raise DataError(mirror_key, f"{url} is not in the mirror {mirror} (looked for {looked})", "not_found")
            files.append(str(hit))
            continue
        path = local_path(url)
        if path is not None and not path.is_file():
            raise DataError(list_key, f"listed file {url} not found", "not_found")
        files.append(str(path) if path is not None else url)
    return files


def split_folder(files: list[str], key: str) -> tuple[str, list[str]]:
    """(the deepest folder holding every file, each file relative to it): what a datatrove reader is given."""
    parts = [f.split("/") for f in files]
    depth = 0
    for pieces in zip(*[p[:-1] for p in parts], strict=False):
        if any(piece != pieces[0] for piece in pieces):
            break
        depth += 1
    if is_url(files[0]) and depth < 3:  # "https:", "", host
        raise DataError(key, f"the listed files are on several hosts ({files[0]}, ...): list one host's files", "config")
    return "/".join(parts[0][:depth]) or "/", ["/".join(p[depth:]) for p in parts]


def hub_glob(repo: str, pattern: str, mirror: str | None, key: str, mirror_key: str) -> tuple[str, list[str]]:
    """(folder, sorted files relative to it) of the files of hub dataset ``repo`` that match ``pattern``:
    ``hf://datasets/<repo>`` listed through huggingface_hub, or the same layout inside ``mirror``."""
    if mirror:
        root = check_mirror(mirror, mirror_key)
        hits = globlib.glob(str(root / pattern), recursive=True)
        files = sorted(os.path.relpath(p, root) for p in hits if os.path.isfile(p))
        if not files:
            raise DataError(mirror_key, f"no file of the mirror {mirror} matches {pattern!r} ({key})", "not_found")
        return str(root), files
    from huggingface_hub import HfFileSystem

    prefix = f"datasets/{repo}/"
    try:
        hits = HfFileSystem().glob(prefix + pattern)
    except Exception as err:  # offline, unknown repository, gated, no network
        problem = f"cannot list hf://{prefix}{pattern} ({_reason(err)}); offline, set {mirror_key} to a local copy"
        raise DataError(key, problem, "not_found") from None
    files = sorted(h[len(prefix) :] for h in hits)
    if not files:
        raise DataError(key, f"no file of hub dataset {repo} matches {pattern!r}", "not_found")
    return f"{HF_DATASETS}{repo}", files


def check_local_inputs(corpus: Any, seed: Any, reads_corpus: bool) -> None:
    """Before any work: the mirrors and local URL lists the run names exist (remote ones are checked when read)."""
    if seed.source == "oasst1" and seed.mirror:
        check_mirror(seed.mirror, "seed.mirror")
    if not reads_corpus:
        return
    if corpus.mirror:
        check_mirror(corpus.mirror, "corpus.mirror")
    if corpus.url_list:
        path = local_path(corpus.url_list)
        relative = not is_url(corpus.url_list) and not corpus.url_list.startswith(("/", "~")) and is_hub_id(corpus.source)
        if path is not None and not relative and not path.is_file():
            raise DataError("corpus.url_list", f"URL list {corpus.url_list} not found", "not_found")
