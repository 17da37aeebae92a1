"""Can this machine run the config? An accelerator, engine or strategy it lacks fails in one line, before any work."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from omegaconf import DictConfig

from bft.errors import ConfigError

DEVICE_SETTING = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_setting(value: str, key: str = "generation.device") -> None:
    """The form of a device setting (any machine): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether this machine
    has that device is :func:`resolve_device`'s question."""
    if not isinstance(value, str) or not DEVICE_SETTING.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not one of auto, cpu, cuda, cuda:N")


_GPU_ACCELERATORS = ("gpu", "cuda")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _no_gpu_driver() -> bool:
    """Linux without the NVIDIA or ROCm kernel driver has no CUDA device: known without importing torch (seconds)."""
    return sys.platform == "linux" and not any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/kfd"))


def cuda_device_count() -> int:
    if _no_gpu_driver():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(value: str, key: str = "generation.device", cuda_count: int | None = None) -> str:
    """The torch device a device setting means on this machine: ``auto`` is ``cuda:0`` when a CUDA GPU is there,
    else ``cpu``; ``cuda`` is ``cuda:0`` (not "the current device", which a training strategy may have moved);
    ``cuda`` / ``cuda:N`` without such a GPU fail in one line naming ``key``. ``cuda_count``: the number of CUDA
    GPUs (default: this machine's)."""
    check_device_setting(value, key)
    if value == "cpu":
        return "cpu"
    count = cuda_device_count() if cuda_count is None else cuda_count
    if value == "auto":
        return "cuda:0" if count else "cpu"
    if count == 0:
        raise ConfigError(f"{key}={value} but this machine has no CUDA GPU; use {key}=auto or {key}=cpu")
    index = int(value.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"{key}={value} but this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}"


def check_machine(cfg: DictConfig) -> None:
    from bft.data.seed import seed_source_problem

    if problem := seed_source_problem(str(cfg.seed.source)):  # a file of this machine: a dry run plans without it
        raise ConfigError(f"seed.source={cfg.seed.source}: {problem}")
    if cfg.generation.backend == "hf":
        resolve_device(str(cfg.generation.device))  # cuda asked for on a machine without one: before any work
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in _GPU_ACCELERATORS:
        count = cuda_device_count()
        if count == 0:
            raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; use trainer=cpu")
        devices = cfg.trainer.devices
        if isinstance(devices, int) and devices > count:
            raise ConfigError(f"trainer.devices={devices} but this machine has {count} CUDA GPU(s)")
    elif accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.accelerator=mps but MPS is not available on this machine; use trainer=cpu")
    if "deepspeed" in str(cfg.trainer.strategy) and not _installed("deepspeed"):
        raise ConfigError(f"trainer.strategy={cfg.trainer.strategy} needs deepspeed: pip install 'bft[deepspeed]'")
    if "server" in cfg.generation:
        from bft.generation.served import check_served

        check_served(cfg)
    if cfg.generation.backend == "vllm":
        if not _installed("vllm"):
            raise ConfigError("generation.backend=vllm but vllm is not installed: pip install 'bft[vllm]' (GPU), or generation=hf")
        if cuda_device_count() == 0:
            raise ConfigError("generation.backend=vllm needs a CUDA GPU and this machine has none; use generation=hf")
