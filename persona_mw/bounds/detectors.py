"""Detectors: small objects that find spans of text a rule cares about.

Every detector follows one protocol, :class:`Detector`: ``detect(text, start=0)`` returns the
spans it finds that begin at or after ``start``; the text before ``start`` is context only (word
boundaries, look-behinds). ``live_start(text, start=0)`` is the earliest index at or after
``start`` where a hit could still begin, or a hit found now could still change, if more text were
appended: a stream releases everything before it and holds only the rest. ``max_span`` is the
longest stretch one hit can cover, plus the characters after it the detector must see to be sure
of it: the cap on what a stream holds back, and the conservative answer of a detector that cannot
tell (``len(text) - max_span``).

Phrase lists of many rules are compiled together into one Aho-Corasick automaton
(:class:`PhraseIndex`, pyahocorasick) over folded text (see :mod:`.normalise`): a scan costs the
same for 10 phrases or 10,000. Word boundaries come free: text and phrases are folded so that
every non-word character is a space, and each phrase is searched with a space on both sides, so
"Scunthorpe", "classic" and "assassin" never contain a hit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import ahocorasick
import regex

from ..types import Span
from .normalise import FOLD_REACH, fold, fold_phrase

__all__ = [
    "Detector",
    "PhraseDetector",
    "PhraseHit",
    "PhraseIndex",
    "RegexDetector",
    "RelationshipDetector",
]

#: Characters a detector may need to see after a hit before it is sure of it (a word boundary,
#: a combining mark, one more digit).
LOOKAHEAD = 4


@runtime_checkable
class Detector(Protocol):
    """Finds spans in text. Stateless: one instance serves every call."""

    #: What kind of detector this is, as it appears in decisions ("phrases", "pii", ...).
    name: str
    #: The longest text one hit can cover, plus the look-ahead it needs (the hold-back need).
    max_span: int

    def detect(self, text: str, start: int = 0) -> list[Span]:
        """Spans with ``span.start >= start``, in order of ``start``."""
        ...

    def live_start(self, text: str, start: int = 0) -> int:
        """The earliest index ``>= start`` where a hit could still begin, or a hit found now
        could still change, if more text were appended (``len(text)`` when none). Text before
        it is settled: ``detect`` on any longer text finds the same hits there. The index is
        also a place where a window may begin again (never inside a candidate)."""
        ...


# -- phrases ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhraseHit:
    """One phrase of one phrase list (``owner``: the list's index) at ``[start, end)``."""

    owner: int
    start: int
    end: int


class PhraseIndex:
    """Many phrase lists in one automaton. ``scan`` reports every hit of every list, overlapping
    hits included (``"kill"`` and ``"kill myself"`` both hit), mapped to original offsets."""

    def __init__(self, lists: Sequence[Iterable[str]]) -> None:
        automaton = ahocorasick.Automaton()
        owners: dict[str, set[int]] = {}
        longest = 0
        for owner, phrases in enumerate(lists):
            for phrase in phrases:
                key = fold_phrase(phrase)
                if not key:
                    continue
                owners.setdefault(key, set()).add(owner)
                longest = max(longest, len(phrase))
        prefixes: set[str] = set()
        for key, who in owners.items():
            for variant in _gap_variants(key):
                padded = f" {variant} "
                automaton.add_word(padded, (len(padded), tuple(sorted(who))))
                prefixes.update(padded[:i] for i in range(1, len(padded)))
        # pyahocorasick exposes no automaton state, so a live match is found the other way
        # round: a padded key has a proper prefix equal to the text from one of its last spaces.
        self._prefixes = frozenset(prefixes)
        self._longest_key = max((len(p) for p in prefixes), default=0)
        self._empty = not owners
        if not self._empty:
            automaton.make_automaton()
        self._automaton = automaton
        # A phrase can match text longer than itself (ligatures, zero-width characters,
        # decomposed accents, double gaps): allow twice its length.
        self.max_span = 2 * longest + LOOKAHEAD

    def scan(self, text: str, start: int = 0) -> list[PhraseHit]:
        if self._empty:
            return []
        folded = fold(text)
        padded = f" {folded.text} "
        hits: list[PhraseHit] = []
        for end_index, (length, owners) in self._automaton.iter(padded):
            # padded[end_index - length + 1 : end_index + 1] is " phrase "; folded offsets are
            # one less (the leading pad).
            o_start, o_end = folded.original_span(end_index - length + 1, end_index - 1)
            if o_start < start:
                continue
            hits.extend(PhraseHit(owner, o_start, o_end) for owner in owners)
        hits.sort(key=lambda h: (h.start, h.end, h.owner))
        return hits

    def live_start(self, text: str, start: int = 0) -> int:
        """Where a phrase could still begin: the start of the latest word from which the folded
        text is a proper prefix of a phrase (with its gaps); the last cluster is always live,
        since a combining mark after it changes how it folds."""
        n = len(text)
        if self._empty or start >= n:
            return n
        settled = _cluster_start(text, max(start, n - FOLD_REACH))
        # fold enough text before the unsettled tail to hold the longest phrase prefix
        reach = self._longest_key + 8
        while True:
            begin = _cluster_start(text, max(0, settled - reach))
            folded = fold(text[begin:settled])
            if len(folded.text) >= self._longest_key or begin == 0:
                break
            reach *= 2
        padded = " " + folded.text
        live = settled
        i = padded.find(" ", max(0, len(padded) - self._longest_key))
        while i != -1:
            if padded[i:] in self._prefixes:
                # the phrase would begin at padded[i + 1], folded index i
                if i < len(folded.text):
                    live = begin + folded.original_span(i, i + 1)[0]
                break
            i = padded.find(" ", i + 1)
        return max(start, live)


def _gap_variants(key: str) -> list[str]:
    """The phrase with each gap between words one or two spaces wide: text folds ". " and
    ", " (and a double space) to two spaces. Up to 6 gaps get variants; longer phrases match
    with single gaps only (keeps the automaton small)."""
    words = key.split(" ")
    if len(words) == 1 or len(words) > 7:
        return [key]
    variants = [words[0]]
    for word in words[1:]:
        variants = [v + gap + word for v in variants for gap in (" ", "  ")]
    return variants


class PhraseDetector:
    """One phrase list as a :class:`Detector` (a :class:`PhraseIndex` of one list)."""

    name = "phrases"

    def __init__(self, phrases: Iterable[str], *, label: str = "phrase") -> None:
        self._index = PhraseIndex([list(phrases)])
        self.label = label
        self.max_span = self._index.max_span

    def detect(self, text: str, start: int = 0) -> list[Span]:
        return [Span(h.start, h.end, self.label) for h in self._index.scan(text, start)]

    def live_start(self, text: str, start: int = 0) -> int:
        return self._index.live_start(text, start)


def _cluster_start(text: str, index: int) -> int:
    """The start of the character cluster (a base character and its combining marks) that
    ``text[index]`` belongs to; ``len(text)`` stays as it is."""
    combining = unicodedata.combining
    while 0 < index < len(text) and combining(text[index]):
        index -= 1
    return index


# -- regular expressions ------------------------------------------------------------------------


class RegexDetector:
    """A regular expression. ``max_len`` is the longest text it may match: a match longer than
    that is cut at ``max_len`` characters, so the stream hold-back stays bounded and the streamed
    verdict equals the whole-text one.

    Compiled with the ``regex`` package (a superset of ``re``'s syntax) for its partial matching:
    a stream holds a match only while the text so far could still be the start of one."""

    name = "regex"

    def __init__(
        self, pattern: str, *, max_len: int = 64, case_sensitive: bool = False, label: str = "regex"
    ) -> None:
        self.pattern = regex.compile(pattern, 0 if case_sensitive else regex.IGNORECASE)
        self.max_len = max_len
        self.label = label
        self.max_span = max_len + LOOKAHEAD

    def detect(self, text: str, start: int = 0) -> list[Span]:
        spans = []
        for match in self.pattern.finditer(text, start):
            if match.end() > match.start():
                end = min(match.end(), match.start() + self.max_len)
                spans.append(Span(match.start(), end, self.label))
        return spans

    def live_start(self, text: str, start: int = 0) -> int:
        """The first match that is partial (the text ends inside it) or ends within the
        look-ahead of the end (a greedy match can still grow; ``\\b`` can still fail)."""
        return partial_live_start(self.pattern, text, start)


def partial_live_start(pattern: regex.Pattern[str], text: str, start: int) -> int:
    """The start of the first match of ``pattern`` from ``start`` that more text could still
    change: one the text ends inside, or one ending fewer than :data:`LOOKAHEAD` characters
    before the end."""
    n = len(text)
    for match in pattern.finditer(text, start, partial=True):
        if match.partial or match.end() + LOOKAHEAD > n:
            return min(int(match.start()), n)
    return n


# -- relationship-seeking ----------------------------------------------------------------------

#: One sentence: up to the next sentence end or line break, capped so hold-back stays bounded.
_SENTENCE_TEMPLATE = r"[^\s.!?](?:[^.!?\n]){{0,{n}}}[.!?]{{0,3}}"


class RelationshipDetector:
    """Sentences whose relationship-seeking score reaches ``threshold``.

    The score is :func:`persona_mw.bounds.relationship.relationship_score` (imported when first
    used) unless ``scorer`` is given. Scoring is per sentence (at most ``max_sentence``
    characters) so a stream is judged as it goes: a stream holds back the sentence being
    written, at most ``max_sentence`` characters.
    """

    name = "relationship"

    def __init__(
        self,
        *,
        threshold: float = 0.6,
        max_sentence: int = 200,
        scorer: Callable[[str], float] | None = None,
    ) -> None:
        self.threshold = threshold
        self._sentence = re.compile(_SENTENCE_TEMPLATE.format(n=max_sentence - 1))
        self._scorer = scorer
        # A stream is never cut inside a sentence (see ``segments``), so beyond that the
        # hold-back need is only the look-ahead that settles where a sentence ends.
        self.max_span = 3 + LOOKAHEAD

    def _score(self, text: str) -> float:
        if self._scorer is None:
            from .relationship import relationship_score  # written alongside; light by default

            self._scorer = relationship_score
        return float(self._scorer(text))

    def segments(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Every sentence, fired or not: a stream must not be cut inside one, or the next
        window would start a sentence where the whole text has none."""
        return [m.span() for m in self._sentence.finditer(text, start)]

    def live_start(self, text: str, start: int = 0) -> int:
        """The start of the sentence being written: a sentence is scored whole."""
        sentences = self.segments(text, start)
        if sentences and sentences[-1][1] == len(text):
            return sentences[-1][0]
        return len(text)

    def detect(self, text: str, start: int = 0) -> list[Span]:
        spans = []
        for m in self._sentence.finditer(text, start):
            if self._score(m.group()) >= self.threshold:
                spans.append(Span(m.start(), m.end(), "relationship"))
        return spans
