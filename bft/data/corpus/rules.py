"""Text rules of the corpus stage: noise lines, document heuristics and segmentation (pure functions)."""

from __future__ import annotations

import math
import re

from bft.config.schema import CorpusConfig

# ---------------------------------------------------------------------------------------------- noise lines

_NAV_SEPARATORS = re.compile(r"\s*(?:\||»|›|·|•|>)\s*")
_NOISE_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(we|this (site|website)|our (site|website)|site) uses? cookies\b",
        r"\bcookie (policy|settings|preferences|consent|notice)\b",
        r"\b(accept|allow|agree to)( all| the use of)? cookies\b",
        r"\bby (continuing|using) (to (use|browse) )?(this|our) (site|website)\b",
        r"\bclick here\b",
        r"\b(subscribe|sign up) (to|for) (our|the) (newsletter|mailing list|updates)\b",
        r"^(subscribe|sign up|log ?in|sign in|register|search|menu|main menu|skip to (main )?content|back to top"
        r"|read more|continue reading|print|email|share|tweet|pin it|advertisement|sponsored|loading\.*"
        r"|previous( post)?|next( post)?|home|related posts?|tags?:.*)[\s.!:]*$",
        r"^share (this|on|via)\b",
        r"^(share|follow us)\b.*\b(facebook|twitter|pinterest|linkedin|instagram|whatsapp|email)\b",
        r"^((facebook|twitter|pinterest|linkedin|instagram|reddit|whatsapp|email|print|x)\W*){2,}$",
        r"^\d+\s+(comments?|replies|shares|likes|views)\b",
        r"^(leave a (comment|reply)|no comments( yet)?|comments? \(\d+\)|add a comment)\b",
        r"^(copyright\b|©)|©\s*(19|20)\d\d|\(c\)\s*(19|20)\d\d|\ball rights reserved\b",
        r"\b(terms (of (use|service)|and conditions)|privacy policy)\b.*\b(terms|privacy|policy|contact|sitemap)\b",
    )
]
_NOISE_MAX_LINE_CHARS = 200


def symbol_ratio(text: str) -> float:
    """Fraction of non-whitespace characters that are neither letters nor digits."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0
    return sum(1 for ch in chars if not ch.isalnum()) / len(chars)


def is_navigation_line(line: str) -> bool:
    """A menu like ``Home | About | Contact``: 3+ short items joined by separators."""
    parts = [p for p in _NAV_SEPARATORS.split(line.strip()) if p]
    if len(parts) < 3 or not _NAV_SEPARATORS.search(line):
        return False
    return all(len(p.split()) <= 3 and any(ch.isalpha() for ch in p) and not p.endswith((".", "?", "!", ",")) for p in parts)


def is_noise_line(line: str) -> bool:
    """Boilerplate: navigation, cookie banners, share buttons, "click here" ads, copyright footers, comment
    counts, or a line that is mostly symbols."""
    stripped = line.strip()
    if not stripped:
        return False
    if symbol_ratio(stripped) > 0.5 or not any(ch.isalnum() for ch in stripped):
        return True
    if len(stripped) > _NOISE_MAX_LINE_CHARS:
        return False
    return is_navigation_line(stripped) or any(p.search(stripped) for p in _NOISE_PATTERNS)


def strip_noise_lines(text: str) -> tuple[str, int]:
    """Remove noise lines; collapse runs of blank lines. Returns (text, number of lines removed)."""
    kept: list[str] = []
    removed = 0
    for line in text.splitlines():
        if is_noise_line(line):
            removed += 1
            continue
        line = line.rstrip()
        if not line.strip() and (not kept or not kept[-1].strip()):
            continue
        kept.append(line)
    return "\n".join(kept).strip(), removed


# ---------------------------------------------------------------------------------------------- document heuristics


def _content_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def caps_line_ratio(text: str) -> float:
    """Fraction of non-blank lines with 3+ letters that are ALL CAPS."""
    lines = [line for line in _content_lines(text) if sum(ch.isalpha() for ch in line) >= 3]
    if not lines:
        return 0.0
    return sum(1 for line in lines if line.isupper()) / len(lines)


def mean_line_length(text: str) -> float:
    """Mean number of characters over non-blank lines."""
    lines = _content_lines(text)
    return sum(len(line) for line in lines) / len(lines) if lines else 0.0


def rejection_reason(text: str, cfg: CorpusConfig) -> str | None:
    """The first document-level heuristic ``text`` fails, or None."""
    if not text.strip():
        return "empty"
    if symbol_ratio(text) > cfg.max_symbol_ratio:
        return "symbol_ratio"
    if caps_line_ratio(text) > cfg.max_caps_line_ratio:
        return "caps_lines"
    if mean_line_length(text) < cfg.min_mean_line_chars:
        return "short_lines"
    return None


# ---------------------------------------------------------------------------------------------- segmentation

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_units(text: str) -> tuple[list[str], str]:
    """Paragraphs (blank-line separated, else one per line) and the joiner that restores them."""
    if re.search(r"\n\s*\n", text):
        return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()], "\n\n"
    return [p.strip() for p in text.splitlines() if p.strip()], "\n"


def _split_oversized(unit: str, max_chars: int) -> list[str]:
    """Split one paragraph longer than ``max_chars`` at sentence ends, then at spaces, as a last resort hard."""
    if len(unit) <= max_chars:
        return [unit]
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(unit):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return _pack(pieces, " ", max_chars, max_chars)


def _pack(units: list[str], joiner: str, max_chars: int, target: float) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    size = 0
    for unit in units:
        extra = len(unit) + (len(joiner) if current else 0)
        if current and (size + extra > max_chars or size >= target):
            segments.append(joiner.join(current))
            current, size, extra = [], 0, len(unit)
        current.append(unit)
        size += extra
    if current:
        segments.append(joiner.join(current))
    return segments


def segment_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` at paragraph boundaries into segments of at most ``max_chars`` characters, of similar size."""
    if len(text) <= max_chars:
        return [text]
    units, joiner = _split_units(text)
    units = [piece for unit in units for piece in _split_oversized(unit, max_chars)]
    target = len(text) / math.ceil(len(text) / max_chars)
    return [s for s in _pack(units, joiner, max_chars, target) if s.strip()]


# ---------------------------------------------------------------------------------------------- header segments

_HEADER_MAX_CHARS = 80
_HEADER_MAX_WORDS = 12


def is_header_line(line: str, next_line: str | None) -> bool:
    """A header: a short line (Markdown ``#`` or no sentence-final punctuation) followed by a longer body line."""
    stripped = line.strip()
    if not stripped or next_line is None or not next_line.strip():
        return False
    if stripped.startswith("#"):
        return True
    if len(stripped) > _HEADER_MAX_CHARS or len(stripped.split()) > _HEADER_MAX_WORDS:
        return False
    if stripped.endswith((".", "!", "?", ",", ";")) or not stripped[0].isalnum():
        return False
    return len(next_line.strip()) > len(stripped)


def segment_at_headers(text: str, max_chars: int) -> list[tuple[str | None, str]]:
    """Humpback's segments: the text under each header, as (header, header + body); over-long bodies are split
    further at paragraph boundaries (each piece keeps its header). Text before the first header has none."""
    lines = [line for line in text.splitlines() if line.strip()]
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for i, line in enumerate(lines):
        if is_header_line(line, lines[i + 1] if i + 1 < len(lines) else None):
            sections.append((line.strip().lstrip("#").strip(), [line.strip()]))
        else:
            sections[-1][1].append(line)
    pieces: list[tuple[str | None, str]] = []
    for header, body in sections:
        if not body:
            continue
        pieces.extend((header, piece) for piece in segment_text("\n".join(body), max_chars))
    return pieces
