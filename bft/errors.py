"""Turn expected failures (bad input, bad config, missing models or keys) into one-line errors, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def expected_errors() -> tuple[type[BaseException], ...]:
    from bft.config.validate import ConfigError
    from bft.data.io import DataError
    from bft.eval.annotators import AnnotatorError
    from bft.models.registry import ModelNotFoundError
    from bft.pipeline.context import PipelineError

    return (ConfigError, DataError, ModelNotFoundError, PipelineError, AnnotatorError, FileNotFoundError, OSError)


@contextmanager
def one_line_errors() -> Iterator[None]:
    try:
        yield
    except expected_errors() as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"bft: error: {message}", file=sys.stderr)
        sys.exit(2)
