"""``bft verify <artifact folder | stage folder | store> ...``: the full check of artifacts against their manifests.

Reusing an artifact checks every file's size, the small files' sha256 and sampled blocks of the big ones
(``bft.artifacts.integrity``), so a 140 GB model is reused in under a second; a bit flipped between sampled blocks
is found only here, where every byte is hashed. Prints one line per bad file (``<file>: <what is wrong>``) and a
summary; exits 1 when anything is bad, 2 when there is nothing to verify. ``--move-aside`` renames each bad
artifact to ``<key>.corrupt-<time>`` so the next run recomputes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bft.artifacts.integrity import BadFile, file_sha256, full_check
from bft.artifacts.store import MANIFEST, move_aside

_NOT_PUBLISHED = (".partial", ".corrupt-", ".tmp", ".old")


def find_artifacts(path: Path) -> list[Path]:
    """The published artifact folders at ``path``: itself, its children (a stage folder) or grandchildren (a store)."""
    if (path / MANIFEST).is_file():
        return [path]
    found = {m.parent for pattern in (f"*/{MANIFEST}", f"*/*/{MANIFEST}") for m in path.glob(pattern)}
    return sorted(p for p in found if not any(mark in p.name for mark in _NOT_PUBLISHED))


def verify_artifact(folder: Path, pool: ThreadPoolExecutor) -> tuple[list[BadFile], int, int]:
    """(bad files, files checked, bytes checked) of one artifact."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        return [BadFile(folder / MANIFEST, f"unreadable manifest ({err})")], 0, 0
    files = manifest.get("files", {})
    size = sum((folder / name).stat().st_size for name in files if (folder / name).is_file())
    return full_check(folder, manifest, lambda paths: pool.map(file_sha256, paths)), len(files), size


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bft verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="artifact folders, stage folders (<store>/<stage>) or stores")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="files hashed at once (default: 4)")
    parser.add_argument("--move-aside", action="store_true", help="rename bad artifacts to <key>.corrupt-<time>")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    artifacts = [a for path in args.paths for a in find_artifacts(path.expanduser().resolve())]
    if not artifacts:
        print(f"bft verify: error: no artifact (folder with {MANIFEST}) at {', '.join(map(str, args.paths))}", file=sys.stderr)
        sys.exit(2)
    started = time.time()
    n_files = n_bytes = 0
    bad_artifacts = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for folder in artifacts:
            bad, files, size = verify_artifact(folder, pool)
            n_files, n_bytes = n_files + files, n_bytes + size
            for problem in bad:
                print(problem, flush=True)
            if bad:
                bad_artifacts.append((folder, len(bad)))
    for folder, _ in bad_artifacts if args.move_aside else ():
        print(f"moved {folder} to {move_aside(folder)}")
    n_bad = sum(n for _, n in bad_artifacts)
    verdict = f"{n_bad} bad file(s) in {len(bad_artifacts)} artifact(s)" if bad_artifacts else "all good"
    seconds = time.time() - started
    print(f"verified {len(artifacts)} artifact(s), {n_files} files, {n_bytes / 1e9:.2f} GB in {seconds:.1f} s: {verdict}")
    sys.exit(1 if bad_artifacts else 0)
