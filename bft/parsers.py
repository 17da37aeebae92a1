"""Pure parsers of model completions. Each returns ``None`` when the text does not parse; callers count those."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCORE_RE = re.compile(r"score\s*[:=]?\s*\**\s*([1-5])(?:\s*/\s*5)?\b", re.IGNORECASE)
_OPEN_RE = re.compile(r"\[RES\]", re.IGNORECASE)
_CLOSE_RE = re.compile(r"\[/RES\]", re.IGNORECASE)

# How a rewrite completion ended (the rewrite stage counts each apart).
PARSED = "parsed"  # an answer between [RES] and [/RES], or after [RES] in a completion that ended by itself (EOS)
TRUNCATED = "truncated"  # no closing [/RES] and cut at max_new_tokens: the answer may be unfinished
UNPARSED = "unparsed"  # finished, but no [RES] tag or an empty answer
REWRITE_STATUSES = (PARSED, TRUNCATED, UNPARSED)


def parse_score(text: str, finished: bool = True) -> int | None:
    """The last ``Score: N`` (N in 1..5) in a rating completion, else None. A rating cut at ``max_new_tokens``
    (``finished`` False: no EOS / end-of-turn token) is unfinished and gives None even if it wrote a score."""
    if not finished:
        return None
    matches = _SCORE_RE.findall(text)
    return int(matches[-1]) if matches else None


@dataclass(frozen=True)
class RewriteParse:
    output: str | None  # the answer, None unless status is PARSED
    status: str  # PARSED | TRUNCATED | UNPARSED


def parse_rewrite_completion(text: str, finished: bool) -> RewriteParse:
    """The answer of a rewrite completion, which counts only when it is whole.

    Whole means closed by ``[/RES]``, or (no closing tag) a completion that ended by itself: ``finished`` is the
    backend's ``Completion.finished`` (an EOS / end-of-turn token, not the ``max_new_tokens`` cut). A completion cut
    before ``[/RES]`` is ``truncated`` even if it opened ``[RES]``; a finished one without ``[RES]`` or with an
    empty answer is ``unparsed``.
    """
    opening = _OPEN_RE.search(text)
    closing = _CLOSE_RE.search(text, opening.end()) if opening else None
    if closing is None and not finished:
        return RewriteParse(None, TRUNCATED)
    if opening is None:
        return RewriteParse(None, UNPARSED)
    body = text[opening.end() : closing.start() if closing else len(text)].strip()
    return RewriteParse(body, PARSED) if body else RewriteParse(None, UNPARSED)


def parse_rewrite(text: str, finished: bool = False) -> str | None:
    """The text between ``[RES]`` and ``[/RES]`` (an unclosed final tag only when ``finished``); else None."""
    return parse_rewrite_completion(text, finished).output


def parse_instruction(text: str, finished: bool = True) -> str | None:
    """A generated instruction: stripped, None if empty or unfinished (cut at ``max_new_tokens``, ``finished``
    False), as an unfinished rewrite is."""
    if not finished:
        return None
    text = text.strip()
    return text or None
