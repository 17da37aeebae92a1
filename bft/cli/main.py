"""``bft``: the Hydra app that runs the whole pipeline for one composed config (or a sweep with ``-m``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bft.config.schema import register_configs

CONF_DIR = str(Path(os.environ.get("BFT_CONF_DIR", Path(__file__).resolve().parents[2] / "conf")))
log = logging.getLogger("bft")

register_configs()


def run(cfg: DictConfig) -> float | None:
    from bft.config.machine import check_machine
    from bft.config.validate import validate
    from bft.eval.annotators import check_annotator_ready
    from bft.eval.endpoint import endpoint_for
    from bft.logger.console import is_verbose, setup_console
    from bft.models.registry import resolve_model_path
    from bft.pipeline.dryrun import print_plan
    from bft.pipeline.roles import models_to_load, resolve

    validate(cfg)
    e = resolve(cfg).eval
    endpoint = endpoint_for(e.annotator, e.judge_url, e.judge_model, e.judge_api_key_env, e.judge_api_scheme)
    if cfg.run.dry_run:
        print_plan(cfg)
        return None
    check_machine(cfg)  # a dry run plans for any machine; a real run needs this one to have what the config asks
    check_annotator_ready(cfg.eval.annotator, endpoint)
    for name in models_to_load(cfg):  # a missing model folder fails here, before any work
        resolve_model_path(name)
    setup_console(is_verbose(HydraConfig.get().verbose))  # after the checks: it imports transformers (seconds)
    from bft.pipeline.runner import print_summary, run_pipeline  # after them too: pandas, for the summary's figures

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ctx = run_pipeline(cfg, run_dir)
    print_summary(ctx)
    return ctx.summary.get("win_rate")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> float | None:
    from bft.errors import one_line_errors

    with one_line_errors(raise_for_submitit=True):  # a sweep job's error reaches the launching process
        return run(cfg)


_HYDRA_FLAGS = ("-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion")


def _compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """The project config composed with ``overrides``, as the ``bft`` command would."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)


def precheck_overrides(argv: list[str]) -> str | None:
    """Compose the config once to turn Hydra's multi-line override errors into one line (single runs only)."""
    if any(a in _HYDRA_FLAGS or a.startswith(("--", "+sweep", "hydra.mode")) for a in argv):
        return None
    argv = [a for a in argv if not a.startswith(("hydra.", "hydra/"))]
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from bft.config.validate import ConfigError, validate

    try:
        cfg = _compose(argv, hydra_config=True)
        validate(cfg)  # schema keys, mandatory values, ranges: before Hydra creates the run folder
        if not cfg.run.dry_run:
            from bft.config.machine import check_machine

            check_machine(cfg)
    except ConfigError as err:
        return str(err)
    except AssertionError as err:  # OmegaConf.update under a null node: `backward_model.name=...` while the role is null
        return _null_parent(argv) or f"{type(err).__name__}: {err}"
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        text = f"{err}\n{err.__cause__ or ''}"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith(("Key", "Value", "Could not find"))), "")
        return "; ".join(dict.fromkeys(filter(None, [lines[0] if lines else type(err).__name__, detail])))
    return None


def _null_parent(argv: list[str]) -> str | None:
    """The first ``a.b.c=v`` override whose parent is null once the group selections of ``argv`` are composed."""
    from omegaconf import OmegaConf

    try:
        cfg = _compose([a for a in argv if "." not in a.partition("=")[0]])  # the group selections alone
    except Exception:  # the selections alone do not compose: the caller reports the original error
        return None
    for arg in argv:
        key = arg.partition("=")[0].lstrip("+~")
        parts = key.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            if OmegaConf.select(cfg, parent, default="missing") is None:
                return f"cannot set {key}: '{parent}' is null in the composed config"
    return None


# Groups whose option may also be a model given as a folder or hub id: `bft model=/path/to/folder`, and the per-role
# slots of the model group: `bft model@backward_model=/path/to/folder`.
_MODEL_GROUPS = ("model", "rewriter")


def _default_option(group: str, conf_dir: str) -> str | None:
    """The option ``conf/config.yaml`` selects for ``group``."""
    from omegaconf import OmegaConf

    for entry in OmegaConf.load(Path(conf_dir) / "config.yaml").defaults:
        if OmegaConf.is_dict(entry) and group in entry:
            return entry[group]
    return None


def expand_model_overrides(argv: list[str], conf_dir: str = CONF_DIR) -> list[str]:
    """``model=<folder or hub id>`` -> ``model.name=<...>`` when it is not one of the group's options;
    ``model@<role>=<folder or hub id>`` -> the role slot gets the base model's option (``model=`` on the command line,
    else the default), with ``<role>.name=<...>``."""

    def is_option(group: str, value: str) -> bool:
        return (Path(conf_dir) / group / f"{value}.yaml").exists()

    pairs = [arg.partition("=")[::2] for arg in argv]

    def base_option() -> str | None:  # read only when a role is given a folder (not on every start)
        return next((v for g, v in pairs if g == "model" and is_option("model", v)), None) or _default_option("model", conf_dir)

    expanded = []
    for arg, (group, value) in zip(argv, pairs, strict=True):
        family, _, role = group.partition("@")
        looks_like_model = "/" in value or Path(value).expanduser().exists()
        if family in _MODEL_GROUPS and value and "," not in value and not is_option(family, value) and looks_like_model:
            expanded.extend([f"{group}={base_option()}", f"{role}.name={value}"] if role else [f"{family}.name={value}"])
        else:
            expanded.append(arg)
    return expanded


_VERBOSE_FLAGS = ("-v", "--verbose")


def main() -> None:
    from bft.cli.ranks import detach_from_launcher, secondary_rank_notice

    notice = secondary_rank_notice(os.environ)  # srun / torchrun started several copies: rank 0 runs the pipeline
    if notice:
        print(f"bft: {notice}", file=sys.stderr)
        sys.exit(0)
    detach_from_launcher(os.environ)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if sys.argv[1:2] == ["export"]:  # bft export run=<run folder or key>: Hugging Face formats (bft.export)
        from bft.export.cli import main as export_main

        return export_main(sys.argv[2:])
    if sys.argv[1:2] == ["verify"]:  # bft verify <artifact folder or store>: every file's sha256 (bft.artifacts.verify)
        from bft.artifacts.verify import main as verify_main

        return verify_main(sys.argv[2:])
    if any(a in _VERBOSE_FLAGS for a in sys.argv[1:]):  # bft -v: every library's own lines (bft.logger.console)
        os.environ["BFT_VERBOSE"] = "1"
        sys.argv[1:] = [a for a in sys.argv[1:] if a not in _VERBOSE_FLAGS]
    sys.argv[1:] = expand_model_overrides(sys.argv[1:])
    problem = precheck_overrides(sys.argv[1:])
    if problem:
        print(f"bft: error: {problem}", file=sys.stderr)
        sys.exit(2)
    app()
