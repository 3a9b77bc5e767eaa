"""Detectors: small objects that find spans of text a rule cares about.

Every detector follows one protocol, :class:`Detector`: ``detect(text, start=0)`` returns the
spans it finds that begin at or after ``start``; the text before ``start`` is context only (word
boundaries, look-behinds). ``live_start(text, start=0)`` is the earliest index at or after
``start`` where a hit could still begin, or a hit found now could still change, if more text were
appended: a stream releases everything before it and holds only the rest. ``max_span`` is the
longest stretch one hit can cover, plus the characters after it the detector must see to be sure
of it: the cap on what a stream holds back, and the conservative answer of a detector that cannot
tell (``len(text) - max_span``).

Phrase lists are :mod:`persona_mw.bounds.phrases` (one Aho-Corasick automaton over folded
text); PII is :mod:`persona_mw.bounds.pii`; the regular-expression, sentence-score and
relationship-seeking detectors are here. Each detector module's names stay importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import regex

from ..types import Detector, Span
from .lookahead import LOOKAHEAD, partial_live_start
from .phrases import PhraseDetector, PhraseHit, PhraseIndex

__all__ = [
    "Detector",
    "PhraseDetector",
    "PhraseHit",
    "PhraseIndex",
    "RegexDetector",
    "RelationshipDetector",
    "SentenceDetector",
]


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


# -- sentences ---------------------------------------------------------------------------------

#: Longest sentence a :class:`SentenceDetector` judges whole (the stream hold-back it implies).
MAX_SENTENCE = 200

#: One sentence: up to the next sentence end or line break, capped so hold-back stays bounded.
_SENTENCE_TEMPLATE = r"[^\s.!?](?:[^.!?\n]){{0,{n}}}[.!?]{{0,3}}"


class SentenceDetector:
    """Sentences whose score reaches ``threshold``: a scorer that reads assistant text judged a
    sentence (at most ``max_sentence`` characters) at a time, so a stream is judged as it goes
    and holds back only the sentence being written.

    With ``context`` > 0 the scorer reads each sentence with up to that many characters before
    it (from a word's start): a list item or a story's next line often says what it is about
    only with the line before it. The context is text already judged, so it adds nothing to
    the hold-back; a stream keeps that much released text to read it (see ``context``).

    Used for the relationship-seeking score and for trained reply classifiers (the
    ``*-output`` models of :mod:`persona_mw.bounds.classifier`)."""

    def __init__(
        self,
        name: str,
        scorer: Callable[[str], float] | None,
        *,
        threshold: float,
        max_sentence: int = MAX_SENTENCE,
        context: int = 0,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self._sentence = re.compile(_SENTENCE_TEMPLATE.format(n=max_sentence - 1))
        self._scorer = scorer
        #: Characters before a sentence read with it; a stream keeps one more of released
        #: text, the one that tells whether the context starts inside a word.
        self.context = context
        # A stream is never cut inside a sentence (see ``segments``), so beyond that the
        # hold-back need is only the look-ahead that settles where a sentence ends.
        self.max_span = 3 + LOOKAHEAD

    def _score(self, text: str) -> float:
        assert self._scorer is not None
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

    def judged(self, text: str, start: int = 0) -> list[tuple[int, int, int]]:
        """Each sentence from ``start`` as ``(read_from, sentence_start, end)``: the scorer
        reads ``text[read_from:end]``, the sentence with its context."""
        out = []
        for a, b in self.segments(text, start):
            read_from = max(0, a - self.context)
            while 0 < read_from < a and not text[read_from - 1].isspace():
                read_from += 1  # no word cut in two
            out.append((read_from, a, b))
        return out

    def detect(self, text: str, start: int = 0) -> list[Span]:
        return [
            Span(a, b, self.name)
            for read_from, a, b in self.judged(text, start)
            if self._score(text[read_from:b]) >= self.threshold
        ]


# -- relationship-seeking ----------------------------------------------------------------------


class RelationshipDetector(SentenceDetector):
    """Sentences whose relationship-seeking score reaches ``threshold``.

    The score is :func:`persona_mw.bounds.relationship.relationship_score` (imported when first
    used) unless ``scorer`` is given."""

    def __init__(
        self,
        *,
        threshold: float = 0.6,
        max_sentence: int = MAX_SENTENCE,
        scorer: Callable[[str], float] | None = None,
    ) -> None:
        super().__init__("relationship", scorer, threshold=threshold, max_sentence=max_sentence)

    def _score(self, text: str) -> float:
        if self._scorer is None:
            # imported on first use: compiling its lexicon takes ~90 ms, which a deployment
            # without a relationship rule never pays
            from .relationship import relationship_score

            self._scorer = relationship_score
        return float(self._scorer(text))
