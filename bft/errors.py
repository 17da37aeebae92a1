"""Turn expected failures (bad input, bad config, missing models or keys, a full disk) into one-line errors, exit 2."""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# A write that fails for lack of room: no space, quota exceeded, file size limit (RLIMIT_FSIZE).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Rust libraries (safetensors, tokenizers) raise e.g. "Error while serializing: I/O error: File too large (os error 27)".
_RUST_IO_ERROR = re.compile(r"(?P<strerror>[^:]+?) \(os error (?P<errno>\d+)\)")


class BftError(Exception):
    """Base of every expected error (bad config, bad input, a missing model, ...): the CLI prints its first line
    and exits 2. A new expected error is one line: ``class XError(BftError, ValueError): ...``."""


class PipelineError(BftError, RuntimeError):
    """A stage cannot go on, with a clear one-line reason (empty data, an undeclared output, ...)."""


class NoPairsError(PipelineError):
    """No generated pair survived curation, rewriting or decontamination (with a data target, the runner reads
    more of the corpus instead of stopping, while there is more to read: ``bft.pipeline.target``)."""


class ConfigError(BftError, ValueError):
    """A setting that cannot work, named by its key (raised before any work where possible)."""


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (BftError, OSError)  # FileNotFoundError is an OSError


def expected_errors() -> tuple[type[BaseException], ...]:
    return EXPECTED_ERRORS


def as_os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: itself, or one rebuilt from a Rust I/O message (safetensors, tokenizers)."""
    if isinstance(err, OSError):
        return err
    found = _RUST_IO_ERROR.search(str(err))
    return OSError(int(found["errno"]), found["strerror"].strip()) if found else None


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name ``path`` in any I/O error raised while writing it (``write()`` failures carry no file name)."""
    try:
        yield
    except BaseException as err:
        os_err = as_os_error(err)
        if os_err is None or (os_err is err and os_err.filename):
            raise
        raise OSError(os_err.errno, os_err.strerror or str(os_err), os.fspath(path)) from err


def describe(err: BaseException) -> str:
    """One line for an expected error; a full disk says what is kept and how to go on."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        where = f" while writing {err.filename}" if err.filename else ""
        return (
            f"disk full ({err.strerror}){where}; finished stages and completed shards are kept, "
            "free space and re-run the same command to resume"
        )
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class SweepJobError(RuntimeError):
    """An expected error in a sweep job that runs under submitit (``hydra/launcher=submitit_slurm``), raised
    instead of exiting: submitit records a job's exception as its result, but an exit leaves no result, and on a
    cluster without Slurm accounting the launching process then waits for that job forever."""


def under_submitit() -> bool:
    """Whether this process is a job submitit started (it exports ``SUBMITIT_EXECUTOR``)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


@contextmanager
def one_line_errors(raise_for_submitit: bool = False) -> Iterator[None]:
    """Expected errors: their line on stderr, then exit 2 (or, with ``raise_for_submitit`` in a submitit job,
    :class:`SweepJobError` with the line, which reaches the process that launched the sweep)."""
    try:
        yield
    except expected_errors() as err:
        line = f"bft: error: {describe(err)}"
        print(line, file=sys.stderr)
        if raise_for_submitit and under_submitit():
            raise SweepJobError(line) from None
        sys.exit(2)
