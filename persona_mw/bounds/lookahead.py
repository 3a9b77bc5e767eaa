"""How far a detector looks past a hit before it is sure of it, and the partial-match rule a
regular-expression detector uses to tell where a hit could still begin (shared by the regex,
phrase and PII detectors: a stream holds back only what more text could still change)."""

from __future__ import annotations

import regex

__all__ = ["LOOKAHEAD", "partial_live_start"]

#: Characters a detector may need to see after a hit before it is sure of it (a word boundary,
#: a combining mark, one more digit).
LOOKAHEAD = 4


def partial_live_start(pattern: regex.Pattern[str], text: str, start: int) -> int:
    """The start of the first match of ``pattern`` from ``start`` that more text could still
    change: one the text ends inside, or one ending fewer than :data:`LOOKAHEAD` characters
    before the end."""
    n = len(text)
    for match in pattern.finditer(text, start, partial=True):
        if match.partial or match.end() + LOOKAHEAD > n:
            return min(int(match.start()), n)
    return n
