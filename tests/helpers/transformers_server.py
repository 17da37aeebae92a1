"""FOR TESTS ONLY: start a real OpenAI-compatible server, ``transformers serve`` (transformers' own, from
``transformers[serving]``), on 127.0.0.1, on the CPU, and stop it.

Unpinned: it loads whatever model folder a request names (the tiny model, a merged adapter folder), as a shared
server that loads models by path does. It returns no ``logprobs`` (transformers ignores the field).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_server(log: Path, startup_s: float = 180.0) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT/v1``) of a running ``transformers serve``."""
    exe = shutil.which("transformers")
    if exe is None:
        raise RuntimeError("the `transformers` command is missing: pip install 'transformers[serving]' (make setup)")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--log-level", "warning"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}: {log.read_text()[-1000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not answer within {startup_s:.0f} s: {log.read_text()[-1000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
