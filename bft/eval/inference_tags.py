"""The system tag appended to each eval instruction at inference (``eval.inference_tag``), as text and as a kind.

Training tags every seed pair with ``sft.seed_tag`` (S_a) and every generated pair with ``sft.web_tag`` (S_w). At
inference the final model is asked with one of: ``seed`` (S_a, BFT's and bft's default), ``web`` (S_w), ``both``
(S_a followed by S_w: HB's best setting, HB Table 4), ``none`` (no tag), or a literal tag sentence (e.g. BFT's
"Answer in the style of an AI Assistant, with knowledge from web search if needed."). Pure functions.
"""

from __future__ import annotations

from bft.errors import ConfigError

INFERENCE_TAG_CHOICES: tuple[str, ...] = ("seed", "web", "both", "none")
_SENTENCE_END = (".", "?", "!")


def inference_tag_text(setting: str | None, seed_tag: str | None, web_tag: str | None) -> str:
    """The text appended to each eval instruction ("" for none); one-line ConfigError for an unknown setting."""
    seed, web = (seed_tag or "").strip(), (web_tag or "").strip()
    value = (setting or "").strip()
    if value == "seed":
        return seed
    if value == "web":
        return web
    if value == "both":
        return " ".join(t for t in (seed, web) if t)
    if value in ("none", ""):
        return ""
    if value in (seed, web, f"{seed} {web}") or (value.endswith(_SENTENCE_END) and " " in value):
        return value  # already resolved (bft.pipeline.roles.resolve is idempotent), or a literal tag sentence
    raise ConfigError(
        f"eval.inference_tag={setting!r} is not one of {', '.join(INFERENCE_TAG_CHOICES)} "
        "or a tag sentence (several words ending in '.', '?' or '!')"
    )


def inference_tag_kind(text: str | None, seed_tag: str | None, web_tag: str | None) -> str:
    """Which setting an inference tag text is: seed, web, both, none, or ``custom`` (any other sentence)."""
    value = (text or "").strip()
    if value in INFERENCE_TAG_CHOICES:
        return value
    if not value:
        return "none"
    for kind in ("seed", "web", "both"):
        if value == inference_tag_text(kind, seed_tag, web_tag):
            return kind
    return "custom"


def train_tags_kind(seed_tag: str | None, web_tag: str | None) -> str:
    """How training tagged its pairs: ``seed/web`` (both tags, HB's and BFT's), ``none``, or ``seed only``/``web only``."""
    seed, web = bool((seed_tag or "").strip()), bool((web_tag or "").strip())
    return {(True, True): "seed/web", (False, False): "none", (True, False): "seed only", (False, True): "web only"}[(seed, web)]
