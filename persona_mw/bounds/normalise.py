"""Text folding for phrase matching, with a map back to the original text.

Phrase rules must see through trivial evasions — full-width letters, ligatures, a Cyrillic
letter for its Latin look-alike, a zero-width space or soft hyphen inside a word, upper
case — but spans and redactions must land on the *original* text. :func:`fold` therefore
returns the folded text and, for every folded character, where it came from.

Folding, per character cluster (a base character and the combining marks after it, so composed and
decomposed accents fold alike): NFKC, casefold, common homoglyphs to their Latin look-alike; then
every character that is not a letter, digit or ``_`` becomes a space (so word boundaries are
plain spaces), and zero-width characters and soft hyphens disappear. Folding is local — a
cluster folds the same whatever surrounds it — which is what lets a stream be folded window by
window with the same result as the whole text.

ASCII text (most model output) takes a fast path whose offsets are the identity. Seeing
through leetspeak, spaced-out and stretched letters is :mod:`persona_mw.bounds.deobfuscate`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["INVISIBLE", "Folded", "fold", "fold_phrase"]

#: Characters removed outright: they render as nothing and are used to split words.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e"
    "\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\ufeff"
)
#: The same, for the detectors that look at original text: an invisible character must change
#: no verdict, so they step over it as folding does.
INVISIBLE = _INVISIBLE

#: Combining diacritical marks (U+0300-U+036F) are dropped: people write "suicidio" for
#: "suicídio" and "nao" for "não", so accents must not decide a match.
_DIACRITICS = range(0x300, 0x370)


@lru_cache(maxsize=1)
def _confusables() -> dict[str, str]:
    """Characters Unicode lists as confusable with one ASCII letter or digit (its
    confusables.txt, as shipped by ``confusable-homoglyphs``), mapped to that character
    lower-cased. Loaded on the first non-ASCII text."""
    from confusable_homoglyphs.utils import load

    table: dict[str, str] = {}
    for char, entries in load("confusables.json").items():
        if len(char) != 1 or char.isascii():
            continue
        for entry in entries:
            glyph = entry["c"]
            if len(glyph) == 1 and glyph.isascii() and glyph.isalnum():
                table[char] = glyph.lower()
                break
    return table


#: ASCII folding as a bytes table: ``bytes.translate`` runs at memory speed.
_ASCII_BYTES = bytes(
    ord(chr(i).lower()) if i < 128 and (chr(i).isalnum() or chr(i) == "_") else ord(" ")
    for i in range(256)
)


@dataclass(frozen=True, slots=True)
class Folded:
    """Folded text; ``starts[j]``/``ends[j]`` is the original stretch folded character ``j``
    came from. ``None`` maps mean the identity (the ASCII fast path)."""

    text: str
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original ``[start, end)`` that folded ``[start, end)`` (non-empty) came from."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


@lru_cache(maxsize=8192)
def _fold_cluster(cluster: str) -> str:
    if cluster[0] in _INVISIBLE:
        # An invisible character carries no text; combining marks after it go too.
        return ""
    out = []
    homoglyphs = _confusables()
    for char in unicodedata.normalize("NFKC", cluster).casefold():
        char = homoglyphs.get(char, char)
        if char in _INVISIBLE:
            continue
        if char.isalnum() or char == "_":
            out.append(char)
        elif unicodedata.combining(char):
            # accents go; other marks (Devanagari vowel signs, ...) are part of the letter
            if ord(char) not in _DIACRITICS:
                out.append(char)
        else:
            out.append(" ")
    return "".join(map(_strip_accent, out))


def _strip_accent(char: str) -> str:
    """é, ñ, ç -> e, n, c: a letter whose decomposition is a base and accents only."""
    if char.isascii():
        return char
    parts = unicodedata.normalize("NFD", char)
    if len(parts) > 1 and all(ord(c) in _DIACRITICS for c in parts[1:]):
        return parts[0]
    return char


class _OneToOne(dict[int, str]):
    """``str.translate`` table filled on demand: a character that folds to exactly one
    character maps to it; any other (removed, expanded, combining) maps to NUL, which sends
    the text down the exact path."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        folded = "" if unicodedata.combining(char) else _fold_cluster(char)
        value = folded if len(folded) == 1 and folded != "\0" else "\0"
        if len(self) < 65536:
            self[code] = value
        return value


_ONE_TO_ONE = _OneToOne({0: "\0"})


def fold(text: str) -> Folded:
    """Fold ``text`` for matching; see the module docstring."""
    if text.isascii():
        return Folded(text.encode("ascii").translate(_ASCII_BYTES).decode("ascii"))
    # Most accented text (NFC é, ñ, ç; Cyrillic; CJK) folds one character to one: offsets stay
    # the identity and `str.translate` does the work in C.
    quick = text.translate(_ONE_TO_ONE)
    if "\0" not in quick:
        return Folded(quick)
    # Otherwise fold exactly only the clusters around the characters that need it (a removed,
    # expanded or combining character); the stretches between keep their one-to-one folding.
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    combining = unicodedata.combining
    pos, n = 0, len(text)
    special = quick.find("\0")
    while special != -1:
        begin = special
        while begin > pos and combining(text[begin]):  # back to the cluster's base character
            begin -= 1
        stop = special + 1
        while stop < n and combining(text[stop]):
            stop += 1
        pieces.append(quick[pos:begin])
        starts.extend(range(pos, begin))
        ends.extend(range(pos + 1, begin + 1))
        folded = _fold_cluster(text[begin:stop])
        if folded:
            pieces.append(folded)
            starts.extend([begin] * len(folded))
            ends.extend([stop] * len(folded))
        pos = stop
        special = quick.find("\0", pos)
    pieces.append(quick[pos:])
    starts.extend(range(pos, n))
    ends.extend(range(pos + 1, n + 1))
    return Folded("".join(pieces), tuple(starts), tuple(ends))


def fold_phrase(phrase: str) -> str:
    """A phrase folded like text, with runs of spaces made one and the ends trimmed."""
    return " ".join(fold(phrase).text.split())
