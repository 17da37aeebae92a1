"""Reuse and verify times of a store holding one big model file: ``python -m bft.bench.reuse --size-gb 10``.

Builds a store in a temp folder under ``--workdir`` with one artifact (``model/model.safetensors`` of ``--size-gb``
GB of random-looking bytes, ``--sparse`` for a sparse file that takes no disk, and a small ``config.json``) through
:class:`~bft.artifacts.store.ArtifactStore`, then times:

- publish: writing the file and hashing it once (sha256, size, sampled blocks);
- reuse: ``get_or_compute`` of the same key (the quick check of ``bft.artifacts.integrity``), best of 3;
- verify: ``bft verify`` on the store (every byte hashed: what every reuse cost before);
- a byte flipped between sampled blocks: reuse (still reused: bounded checks cannot see it) and verify (finds it);
- the file truncated by one byte: the reuse check finds it and moves the artifact aside.

The folder is removed at the end. Check ``df -h`` first: a real file takes ``--size-gb`` of disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from bft.artifacts import integrity
from bft.artifacts.store import ArtifactStore, StageOutput

CHUNK = 64 * 1024 * 1024


def write_model(path: Path, size: int, sparse: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        if sparse:
            handle.truncate(size)
            return
        block = bytearray(os.urandom(CHUNK))
        written = 0
        while written < size:
            block[:8] = written.to_bytes(8, "little")  # no two chunks alike
            n = min(CHUNK, size - written)
            handle.write(block[:n])
            written += n


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _verify(root: Path) -> tuple[int, str]:
    from bft.artifacts.verify import main as verify_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            verify_main([str(root)])
        except SystemExit as exit_:  # bft verify exits with its verdict
            return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


def measure(size: int, workdir: Path, sparse: bool) -> dict[str, float | bool]:
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bft-reuse-bench-", dir=workdir))
    try:

        def compute(work: Path) -> StageOutput:
            write_model(work / "model" / "model.safetensors", size, sparse)
            (work / "model" / "config.json").write_text('{"hidden_size": 8192}')
            return StageOutput()

        def reuse():
            return ArtifactStore(root).get_or_compute("final_model", {"size": size}, {}, compute)

        publish_s, art = _timed(reuse)
        reuse_s = min(_timed(reuse)[0] for _ in range(3))
        assert reuse().reused
        verify_s, (verify_code, _) = _timed(lambda: _verify(root))
        weights = art.file("model/model.safetensors")
        offsets = integrity.sample_offsets(size)
        flip_at = offsets[len(offsets) // 2] + integrity.SAMPLE_BLOCK + 4096
        with weights.open("r+b") as handle:
            handle.seek(flip_at)
            byte = handle.read(1)
            handle.seek(flip_at)
            handle.write(bytes([byte[0] ^ 0x01]))
        flipped_reuse_s, flipped = _timed(reuse)
        flipped_verify_s, (flipped_code, flipped_out) = _timed(lambda: _verify(root))
        os.truncate(weights, size - 1)
        truncated_s, loaded = _timed(lambda: ArtifactStore(root).load("final_model", art.key))
        return {
            "publish_s": publish_s,
            "reuse_s": reuse_s,
            "verify_s": verify_s,
            "verify_ok": verify_code == 0,
            "flipped_reused": flipped.reused,
            "flipped_reuse_s": flipped_reuse_s,
            "flipped_verify_s": flipped_verify_s,
            "flipped_found_by_verify": flipped_code == 1 and "model.safetensors: sha256 differs" in flipped_out,
            "truncated_reuse_s": truncated_s,
            "truncated_moved_aside": loaded is None and not art.path.exists(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bft.bench.reuse", description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=10.0, help="size of the model file (default 10)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the temp store goes")
    p.add_argument("--sparse", action="store_true", help="a sparse file (no disk used; reads are of zeros)")
    args = p.parse_args(argv)
    size = int(args.size_gb * 1e9)
    free = shutil.disk_usage(args.workdir).free
    if not args.sparse and free < size + 5e9:  # the file, and room to spare for everyone else
        p.error(f"{args.workdir} has {free / 1e9:.1f} GB free, {size / 1e9 + 5:.1f} GB needed: use --sparse or less")
    store_log = logging.getLogger("bft.artifacts.store")
    level = store_log.level
    store_log.setLevel(logging.ERROR)  # the truncated file's warning is expected
    try:
        r = measure(size, args.workdir, args.sparse)
    finally:
        store_log.setLevel(level)
    kind = "sparse" if args.sparse else "real"
    print(f"store with one {size / 1e9:.1f} GB model file ({kind}) under {args.workdir}")
    print(f"publish (write + hash once):        {r['publish_s']:8.2f} s")
    print(f"reuse (sizes + sampled blocks):     {r['reuse_s']:8.3f} s   best of 3")
    print(f"bft verify (every byte):            {r['verify_s']:8.2f} s   {'ok' if r['verify_ok'] else 'FAILED'}")
    print(f"flipped byte, reuse:                {r['flipped_reuse_s']:8.3f} s   reused={r['flipped_reused']} (between samples)")
    found = "found" if r["flipped_found_by_verify"] else "NOT FOUND"
    print(f"flipped byte, bft verify:           {r['flipped_verify_s']:8.2f} s   {found}")
    aside = "found, moved aside (the run would recompute it)" if r["truncated_moved_aside"] else "NOT FOUND"
    print(f"truncated by 1 byte, reuse check:   {r['truncated_reuse_s']:8.3f} s   {aside}")


if __name__ == "__main__":
    main()
