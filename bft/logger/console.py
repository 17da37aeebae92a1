"""The console a person reads: one handler, one line per message, no advertisements, no known deprecation noise.

* Lightning and transformers log through the root logger's handler (Hydra's: console + ``<run>/bft.log``) instead of
  their own, so no line prints twice.
* Their INFO chatter (``GPU available: False``, ``Trainer.fit stopped``, weight-loading bars) is kept for ``-v``.
* Lightning's advertisement for its own logger is dropped at the logger that emits it, always.
* Known deprecation and FutureWarnings of the libraries, which a user cannot act on, are silenced by message.

``-v`` / ``--verbose`` on the ``bft`` command line, or Hydra's ``hydra.verbose``, brings every line back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# (warning category, message regex) of third-party warnings a bft user cannot act on
KNOWN_WARNINGS: list[tuple[type[Warning], str]] = [
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (FutureWarning, r"`past_key_values` is deprecated"),
    (Warning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (Warning, r"`weights_only` was not set"),
    (Warning, r".*does not have many workers which may be a bottleneck"),
    (Warning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    (FutureWarning, r"`torch.cuda.amp.*` is deprecated"),
    (Warning, r"The `srun` command is available on your system but is not used"),  # bft launches its own jobs
]
# library log lines about choices bft makes for the user (its saving path, submitit's status without accounting)
KNOWN_LOG_LINES = ("Saving_path is given but not 'auto'", "Bypassing sacct error", "Slurm accounting storage is disabled")
# loggers whose own handlers are removed so that their records reach the root handler once
THIRD_PARTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")
QUIET_LOGGERS = (
    *THIRD_PARTY_LOGGERS,
    "transformers",
    "sentence_transformers",
    "datasets",
    "alpaca_eval",
    "httpx",
    "filelock",
    "submitit",
)
_ADVERTISEMENTS = ("💡 Tip:", "litlogger", "LitLogger")


class DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(marker in message for marker in _ADVERTISEMENTS)


# the level setup_console chose, for the Lightning loggers of a process that imports Lightning after it
_CONSOLE: dict[str, int] = {}


def setup_console(verbose: bool = False) -> None:
    """Route third-party logging through the root handler and quiet what a user cannot act on (idempotent).

    Lightning is not imported here (its import takes seconds that a run which trains nothing, or fails first, does
    not pay): training calls :func:`route_lightning_loggers` once it has imported Lightning."""
    level = logging.INFO if verbose else logging.WARNING
    _CONSOLE["level"] = level
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    route_lightning_loggers()
    try:
        import transformers.utils.logging as tlog

        tlog.disable_default_handler()
        tlog.enable_propagation()
        tlog.set_verbosity(level)
        (tlog.enable_progress_bar if verbose else tlog.disable_progress_bar)()
    except ImportError:
        pass
    datasets_progress_bars(verbose)
    if not verbose:
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        _short_console_format()


class BftOrImportant(logging.Filter):
    """On the terminal: bft's own INFO lines, and warnings or errors from anyone (libraries log INFO to the root),
    less the library lines about choices bft made (``KNOWN_LOG_LINES``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "bft" or record.name.startswith(("bft.", "__main__")):
            return True
        return record.levelno >= logging.WARNING and not any(line in record.getMessage() for line in KNOWN_LOG_LINES)


def datasets_progress_bars(verbose: bool) -> None:
    """Hugging Face ``datasets`` bars on where verbose, off elsewhere, without importing it (a second that most bft
    processes do not otherwise pay): sentence-transformers, alpaca-eval and the export import it later and read the
    variable, as do the processes this one starts. A variable the user set is left alone."""
    variable = "HF_DATASETS_DISABLE_PROGRESS_BARS"
    if not verbose and variable not in os.environ:
        os.environ[variable] = "1"
        _CONSOLE["datasets_bars_off"] = 1
    elif verbose and _CONSOLE.pop("datasets_bars_off", None):
        os.environ.pop(variable, None)
    if "datasets" in sys.modules:  # imported first: its switch (it warns where the variable, read at import, wins)
        datasets = sys.modules["datasets"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (datasets.enable_progress_bars if verbose else datasets.disable_progress_bars)()


def _short_console_format() -> None:
    """``10:06:16 seed: computing (8a08...)`` on the terminal; the run's log file keeps Hydra's full format and all."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
            if not any(isinstance(f, BftOrImportant) for f in handler.filters):
                handler.addFilter(BftOrImportant())


def route_lightning_loggers() -> None:
    """Lightning's loggers through the root handler, at the console's level, advertisements dropped. Importing
    Lightning adds a handler of its own (every line would print twice) and sets INFO, so a process that imports it
    after :func:`setup_console` calls this before its first Trainer; without setup_console, this does nothing."""
    level = _CONSOLE.get("level")
    if level is None:
        return
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(level)
    ads = DropAdvertisements()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, DropAdvertisements) for f in target.filters):
            target.addFilter(ads)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Swallow what an import prints: transformers' W&B integration prints ``[INFO] Running in WANDB offline mode``
    when sentence-transformers imports it."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def is_verbose(hydra_verbose: object = None) -> bool:
    """``bft -v`` (see bft.cli.main) or ``hydra.verbose`` set to anything true."""
    import os

    return os.environ.get("BFT_VERBOSE") == "1" or bool(hydra_verbose)
