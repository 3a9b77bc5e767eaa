"""Everyday spelling for phrase matching: filler words between the words of a thought, doubled
and dropped letters.

People write "i think everyone would honestly be better off if i just wasnt around", "jai envie
de mourrir", "ich will mich umbrigen". A phrase list cannot hold every such sentence, so a rule
that opts in (``PhrasesSpec.lenient``) is also matched on a *respelled view* of the folded text,
made word by word (see :class:`Respeller`):

* a filler word (:data:`FILLERS`: "just", "honestly", "vraiment", "einfach", ...) is left out;
* a word the rule's phrases do not contain is replaced by the one phrase word it is a typo of:
  the same word with doubled letters made single ("mourrir", "tuerr", "amazzare"), or with one
  letter missing or one too many ("mysef", "sterbn", "envi", "mourire"; only for phrase words of
  five letters or more, and never the first letter, so "ill" never reads "kill");
* a chat abbreviation (:data:`ABBREVIATIONS`: "nn", "vc", "rly") is read as its word, an elided
  French or Italian word written joined ("jai", "lalcool") as the two words, and German "ae",
  "oe", "ue" as the umlaut they stand for ("waere", "fuer") — each only when the phrases have the
  result.

Every word is respelled on its own, whatever surrounds it, so a stream sees the same view as
the whole text (the phrase index's ``live_start`` checks prefixes on it too). The view's offsets
map back to the original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import pairwise

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
        "seriamente",
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
        "uberhaupt",
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
    "pt": (
        "so",
        "apenas",
        "mesmo",
        "tipo",
        "realmente",
        "sinceramente",
        "simplesmente",
        "seriamente",
        "ja",
    ),
    "it": (
        "solo",
        "davvero",
        "proprio",
        "veramente",
        "sinceramente",
        "semplicemente",
        "letteralmente",
        "tipo",
        "seriamente",
    ),
}
FILLERS: frozenset[str] = frozenset(w for words in _FILLERS_BY_LANGUAGE.values() for w in words)
#: Chat abbreviations: one word for another, read as it only where a phrase has the word (and
#: never across languages where the word differs: "q" is "que" in es and pt alike).
ABBREVIATIONS: dict[str, str] = {
    # en
    "rly": "really",
    "abt": "about",
    "u": "you",
    "ur": "your",
    "r": "are",
    "bc": "because",
    "cuz": "because",
    "ppl": "people",
    "idc": "i don t care",
    # es, pt
    "q": "que",
    "k": "que",
    "xq": "porque",
    "pq": "porque",
    "vc": "voce",
    "vcs": "voces",
    "n": "nao",
    "tb": "tambem",
    "pra": "para",
    # fr
    "jpense": "je pense",
    "jsuis": "je suis",
    "chui": "je suis",
    "jveux": "je veux",
    "jvais": "je vais",
    "jpeux": "je peux",
    "pk": "pourquoi",
    # de
    "nich": "nicht",
    "net": "nicht",
    "hab": "habe",
    "denk": "denke",
    # it
    "nn": "non",
    "ke": "che",
    "cmq": "comunque",
    "xke": "perche",
}
#: Elided words (fr "j'ai", "l'alcool", it "l'alcol", "c'e") fold to two words; people often type
#: them joined ("jai", "lalcool").
_ELIDED = frozenset("c d j l m n s t qu")
_VOWELS = frozenset("aeiouyh")
_UMLAUT = re.compile(r"ae|oe|ue")
#: Typos are corrected into phrase words of at least this many letters by a dropped letter.
_MIN_DROPPED = 5
#: Words shorter than this are never corrected ("to", "se").
_MIN_WORD = 3
#: Words whose respelling is remembered, per respeller.
_MEMO = 65536
_DOUBLED = re.compile(r"(.)\1+")


def _single(word: str) -> str:
    """``word`` with every run of one letter made one letter ("mourrir" -> "mourir")."""
    return _DOUBLED.sub(r"\1", word)


class Respeller:
    """The respelled view of folded text for the words of some phrases (folded)."""

    def __init__(self, phrases: Iterable[str]) -> None:
        phrases = set(phrases)
        self._vocabulary = frozenset(
            w for phrase in phrases for w in phrase.split(" ") if w not in FILLERS
        )
        #: elided pairs typed joined: "jai" -> "j ai"
        self._joined: dict[str, str] = {}
        for phrase in phrases:
            words = phrase.split(" ")
            for first, second in pairwise(words):
                joined = first + second
                if first in _ELIDED and second[:1] in _VOWELS:
                    self._joined[joined] = f"{first} {second}"
        corrections: dict[str, str | None] = {}

        def offer(typo: str, word: str) -> None:
            if typo in self._vocabulary or typo in FILLERS or len(typo) < _MIN_WORD:
                return
            # a typo of two different phrase words is neither (two spellings of one word,
            # "umbringen" and "umbrinngen", are one)
            earlier = corrections.get(typo, word)
            same = earlier is not None and _single(earlier) == _single(word)
            corrections[typo] = earlier if same else None

        for word in self._vocabulary | FILLERS:  # a typo of a filler is a filler
            if not word.isalpha() or len(word) < _MIN_WORD:
                continue
            offer(_single(word), word)
            if len(word) >= _MIN_DROPPED:
                for i in range(1, len(word)):  # never the first letter
                    dropped = word[:i] + word[i + 1 :]
                    offer(dropped, word)
                    offer(_single(dropped), word)
        self._corrections = {t: w for t, w in corrections.items() if w is not None}
        self._memo: dict[str, str | None] = {}

    def respell(self, word: str) -> str | None:
        """The word as the view has it: itself, its correction (perhaps two words), or
        ``None`` (a filler)."""
        if word in FILLERS:
            return None
        joined = self._joined.get(word)  # split even where a phrase has it joined too
        if joined is not None:
            return joined
        if word in self._vocabulary:
            return word
        expanded = ABBREVIATIONS.get(word)
        if expanded is not None and all(w in self._vocabulary for w in expanded.split(" ")):
            return expanded
        if len(word) < _MIN_WORD:
            return word
        if "e" in word and _UMLAUT.search(word):
            plain = _UMLAUT.sub(lambda m: m.group()[0], word)
            if plain in FILLERS:
                return None
            if plain in self._vocabulary:
                return plain
        single = _single(word)
        if single in self._vocabulary:
            return single
        corrected = self._corrections.get(word) or self._corrections.get(single)
        if corrected is None and len(word) > _MIN_DROPPED:  # one letter too many ("mourire")
            found = {word[:i] + word[i + 1 :] for i in range(1, len(word))} & self._vocabulary
            corrected = found.pop() if len(found) == 1 else None
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
        body = text[:end]
        # the distinct words that read differently, then where they are: work in proportion to
        # the changes, not to the words (model-sized text has few)
        changes = {}
        for word in set(body.split()):
            respelled = self._respelled(word)
            if respelled != word:
                changes[word] = respelled
        if not changes:
            return None if end == len(text) else _slice(folded, 0, end)
        edits: list[tuple[int, int, str | None]] = []
        padded = f" {body} "
        for word, respelled in changes.items():
            key = f" {word} "
            at = padded.find(key)
            while at != -1:  # padded[at + 1:] starts with the word: body[at:]
                edits.append((at, at + len(word), respelled))
                at = padded.find(key, at + len(word) + 1)
        edits.sort()
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pos = 0
        for w_start, w_end, respelled in edits:
            _copy(folded, pos, w_start, chars, starts, ends)
            if respelled is None:  # a filler goes with the spaces after it
                while w_end < end and body[w_end] == " ":
                    w_end += 1
            else:
                o_start, o_end = folded.original_span(w_start, w_end)
                chars.append(respelled)
                starts.extend([o_start] * len(respelled))
                ends.extend([o_end] * len(respelled))
            pos = w_end
        _copy(folded, pos, end, chars, starts, ends)
        return Folded("".join(chars), tuple(starts), tuple(ends))

    def _respelled(self, word: str) -> str | None:
        """:meth:`respell`, remembered (words repeat from text to text)."""
        try:
            return self._memo[word]
        except KeyError:
            respelled = self.respell(word)
            if len(self._memo) < _MEMO:
                self._memo[word] = respelled
            return respelled


def _slice(folded: Folded, start: int, end: int) -> Folded:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    _copy(folded, start, end, chars, starts, ends)
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
