"""Everyday spelling for phrase matching: filler words between the words of a thought, doubled
and dropped letters.

People write "i think everyone would honestly be better off if i just wasnt around", "jai envie
de mourrir", "ich will mich umbrigen". A phrase list cannot hold every such sentence, so a rule
that opts in (``PhrasesSpec.lenient``) is also matched on a *respelled view* of the folded text,
made word by word (see :class:`Respeller`):

* a filler word (:data:`FILLERS`: "just", "honestly", "vraiment", "einfach", ...) is left out;
* a word the rule's phrases do not contain is replaced by the one phrase word it is a typo of:
  the same word with doubled letters made single ("mourrir", "tuerr", "amazzare"), or with one
  inner letter missing ("mysef", "sterbn", "umbrigen"; only for phrase words of five letters or
  more, and never the first or last letter, so "ill" never reads "kill").

Every word is respelled on its own, whatever surrounds it, so a stream sees the same view as
the whole text (the phrase index's ``live_start`` checks prefixes on it too). The view's offsets
map back to the original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .normalise import Folded

__all__ = ["FILLERS", "Respeller"]

#: Words that sit between the parts of a thought without changing it (adverbs of degree,
#: sincerity and hedging, chat abbreviations). Words that carry meaning inside phrases ("all",
#: "anymore", "no", "noch") are not here; a phrase that contains a filler still matches the
#: text as written.
_FILLERS_BY_LANGUAGE: dict[str, tuple[str, ...]] = {
    "en": (
        "just",
        "really",
        "honestly",
        "literally",
        "simply",
        "actually",
        "truly",
        "seriously",
        "genuinely",
        "totally",
        "even",
        "kinda",
        "lowkey",
        "ngl",
        "tbh",
        "fr",
        "so",
    ),
    "es": (
        "solo",
        "realmente",
        "sinceramente",
        "honestamente",
        "literalmente",
        "simplemente",
        "neta",
        "ya",
    ),
    "fr": (
        "juste",
        "vraiment",
        "franchement",
        "honnetement",
        "simplement",
        "litteralement",
        "carrement",
        "serieusement",
        "sincerement",
        "genre",
        "meme",
        "tellement",
    ),
    "de": (
        "einfach",
        "echt",
        "wirklich",
        "ehrlich",
        "halt",
        "eben",
        "eigentlich",
        "irgendwie",
        "total",
        "nur",
        "ja",
        "doch",
        "mal",
    ),
    "pt": ("so", "apenas", "mesmo", "tipo", "realmente", "sinceramente", "simplesmente", "ja"),
    "it": (
        "solo",
        "davvero",
        "proprio",
        "veramente",
        "sinceramente",
        "semplicemente",
        "letteralmente",
        "tipo",
    ),
}
FILLERS: frozenset[str] = frozenset(w for words in _FILLERS_BY_LANGUAGE.values() for w in words)
#: Typos are corrected into phrase words of at least this many letters by a dropped letter.
_MIN_DROPPED = 5
#: Words shorter than this are never corrected ("to", "se").
_MIN_WORD = 3
_WORD = re.compile(r"[^ ]+")
_DOUBLED = re.compile(r"(.)\1+")


def _single(word: str) -> str:
    """``word`` with every run of one letter made one letter ("mourrir" -> "mourir")."""
    return _DOUBLED.sub(r"\1", word)


class Respeller:
    """The respelled view of folded text for one vocabulary: the words of a rule's phrases."""

    def __init__(self, vocabulary: Iterable[str]) -> None:
        self._vocabulary = frozenset(w for w in vocabulary if w not in FILLERS)
        corrections: dict[str, str | None] = {}

        def offer(typo: str, word: str) -> None:
            if typo in self._vocabulary or typo in FILLERS or len(typo) < _MIN_WORD:
                return
            # a typo of two different phrase words is neither
            corrections[typo] = word if corrections.get(typo, word) == word else None

        for word in self._vocabulary | FILLERS:  # a typo of a filler is a filler
            if not word.isalpha() or len(word) < _MIN_WORD:
                continue
            offer(_single(word), word)
            if len(word) >= _MIN_DROPPED:
                for i in range(1, len(word) - 1):
                    dropped = word[:i] + word[i + 1 :]
                    offer(dropped, word)
                    offer(_single(dropped), word)
        self._corrections = {t: w for t, w in corrections.items() if w is not None}

    def respell(self, word: str) -> str | None:
        """The word as the view has it: itself, its correction, or ``None`` (a filler)."""
        if word in FILLERS:
            return None
        if word in self._vocabulary or len(word) < _MIN_WORD:
            return word
        single = _single(word)
        if single in self._vocabulary:
            return single
        corrected = self._corrections.get(word) or self._corrections.get(single)
        if corrected is None:
            return word
        return None if corrected in FILLERS else corrected

    def view(self, folded: Folded, *, last_word: bool = True) -> Folded | None:
        """The respelled view of ``folded`` (offsets into the same original text), or ``None``
        when it reads the same. ``last_word=False`` leaves out a last word with no space after
        it (one still being written, which may yet become a filler or a typo of another
        word)."""
        text = folded.text
        end = len(text)
        if not last_word and text and text[-1] != " ":
            end = text.rfind(" ") + 1
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        changed = end < len(text)
        pos = 0
        for match in _WORD.finditer(text, 0, end):
            w_start, w_end = match.span()
            gap_end = w_end  # the spaces after the word go (or stay) with it
            while gap_end < end and text[gap_end] == " ":
                gap_end += 1
            if pos < w_start:  # leading spaces
                _copy(folded, pos, w_start, chars, starts, ends)
            word = match.group()
            respelled = self.respell(word)
            if respelled is None:
                changed = True
            elif respelled == word:
                _copy(folded, w_start, gap_end, chars, starts, ends)
            else:
                changed = True
                o_start, o_end = folded.original_span(w_start, w_end)
                chars.extend(respelled)
                starts.extend([o_start] * len(respelled))
                ends.extend([o_end] * len(respelled))
                _copy(folded, w_end, gap_end, chars, starts, ends)
            pos = gap_end
        if not changed:
            return None
        return Folded("".join(chars), tuple(starts), tuple(ends))


def _copy(
    folded: Folded, start: int, end: int, chars: list[str], starts: list[int], ends: list[int]
) -> None:
    chars.extend(folded.text[start:end])
    if folded.starts is None or folded.ends is None:  # the identity (ASCII)
        starts.extend(range(start, end))
        ends.extend(range(start + 1, end + 1))
    else:
        starts.extend(folded.starts[start:end])
        ends.extend(folded.ends[start:end])
