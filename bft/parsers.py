"""Pure parsers of model completions. Each returns ``None`` when the text does not parse; callers count those."""

from __future__ import annotations

import re

_SCORE_RE = re.compile(r"score\s*[:=]?\s*\**\s*([1-5])(?:\s*/\s*5)?\b", re.IGNORECASE)
_RES_RE = re.compile(r"\[RES\](.*?)(?:\[/RES\]|$)", re.DOTALL | re.IGNORECASE)


def parse_score(text: str) -> int | None:
    """The last ``Score: N`` (N in 1..5) in a rating completion, else None."""
    matches = _SCORE_RE.findall(text)
    return int(matches[-1]) if matches else None


def parse_rewrite(text: str) -> str | None:
    """The text between ``[RES]`` and ``[/RES]`` (an unclosed final tag is accepted); None if absent or empty."""
    match = _RES_RE.search(text)
    if not match:
        return None
    body = match.group(1).strip()
    return body or None


def parse_instruction(text: str) -> str | None:
    """A generated instruction: stripped, None if empty."""
    text = text.strip()
    return text or None
