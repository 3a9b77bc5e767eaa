"""Skip the regular expressions that cannot match a text: one pass for many patterns.

The cue and relationship-seeking lexicons are a few dozen large alternations, each run over
every message and reply. Python's ``re`` tries each of them at every position of the text, so
their cost grows with (patterns x characters) — about 5 µs per pattern on a short reply, most of
the signals' per-call CPU. Yet most texts match none of them.

A :class:`LiteralGate` reads, once, from each pattern's parse tree a set of literal strings one
of which every match must contain (``I(?:'m| am) here for you`` → ``{"i'm here for you",
"i am here for you"}``; a pattern with no such literal gets none and always runs). Per text, one
Aho-Corasick pass (``ahocorasick_rs``, already the phrase rules' automaton) finds which of those
literals occur; only the patterns with one present are worth running. It is a prefilter in the
exact sense: a pattern it skips has no match in the text, so results are the same as running
every pattern (a property test checks it against hypothesis-generated matches of every pattern).

Case-insensitive patterns are checked on the text folded as ``re`` compares characters: lower
case, plus the four non-ASCII letters ``re.IGNORECASE`` equates with ASCII ones (U+0130,
U+0131, U+017F, U+212A); their literals are cut to runs of ASCII characters, so no other
Unicode case rule can hide a match. White space runs count as one space on both sides. Scoped
flags (``(?i:...)``, ``(?-i:...)``) make a pattern ungated (it always runs).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

__all__ = ["LiteralGate", "fold_ignorecase", "required_literals"]

# The standard library's regular-expression parser and its opcodes (``re._parser``, the parser
# ``re.compile`` itself runs; untyped, so read as Any).
sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

#: Non-ASCII characters that ``re.IGNORECASE`` matches with an ASCII letter (computed from
#: ``_sre.unicode_tolower`` and ``re._casefix``; a test recomputes it over all of Unicode).
_TO_ASCII = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})

#: Cross products of alternatives are kept up to this many strings, then cut.
_MAX_STRINGS = 64


def fold_ignorecase(text: str) -> str:
    """``text`` as case-insensitive literals are looked for in it (lengths may change: only
    presence is asked, not offsets)."""
    if text.isascii():
        return text.lower()
    return text.translate(_TO_ASCII).lower()


def _spaced(text: str) -> str:
    """Each run of white space as one space, and one at each end: the literals spell a run of
    ``\\s+`` (or any white space the pattern matches) as one space."""
    return f" {' '.join(text.split())} "


def _join(a: str, b: str) -> str:
    return a + b[1:] if a.endswith(" ") and b.startswith(" ") else a + b


@dataclass(frozen=True, slots=True)
class _Info:
    exact: frozenset[str] | None  # every string the piece can match, when few and all literal
    required: frozenset[str] | None  # one of these is inside every match; None: no such set
    #: a repetition of one or more of these: one copy ends the run before it, one starts the
    #: run after it
    repeated: frozenset[str] | None = None


_ANY = _Info(exact=None, required=None)
_SPACE = frozenset({" "})


def _better(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """The more selective of two requirements: the longer shortest string, then fewer."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b, key=lambda s: (min(len(x.strip()) for x in s), -len(s)))


def _usable(strings: Iterable[str]) -> frozenset[str] | None:
    found = frozenset(strings)
    return found if found and not any(s.isspace() or not s for s in found) else None


class _Unsupported(Exception):
    """A construct the reader does not follow soundly (scoped flags)."""


def _sequence(items: Sequence[tuple[object, object]], ignorecase: bool) -> _Info:
    current: set[str] = {""}  # the literal strings the run so far can be
    required: frozenset[str] | None = None
    exact: set[str] | None = {""}
    for op, av in items:
        piece = _piece(op, av, ignorecase)
        if piece.exact is not None:
            product = {_join(a, b) for a in current for b in piece.exact}
            if len(product) <= _MAX_STRINGS:
                current = product
                exact = product if exact is not None else None
                continue
        if piece.repeated is not None:
            product = {_join(a, b) for a in current for b in piece.repeated}
            if len(product) <= _MAX_STRINGS:
                required = _better(required, _usable(product))
                exact = None
                current = set(piece.repeated)
                continue
        # the run ends here: what it spelled is required, and so is what this piece requires
        required = _better(required, _usable(current))
        if piece.required is not None:
            required = _better(required, _usable(piece.required))
        exact = None
        current = set(piece.exact) if piece.exact is not None else {""}
    required = _better(required, _usable(current))
    return _Info(
        exact=frozenset(exact) if exact is not None else None,
        required=required,
    )


def _char(code: int, ignorecase: bool) -> frozenset[str] | None:
    ch = chr(code)
    if ch.isspace():
        return _SPACE
    if not ignorecase:
        return frozenset({ch})
    if not ch.isascii():  # cut the literal here: only ASCII runs are compared folded
        return None
    return frozenset({ch.lower()})


def _piece(op: object, av: object, ignorecase: bool) -> _Info:
    if op is sre.LITERAL:
        assert isinstance(av, int)
        chars = _char(av, ignorecase)
        return _Info(exact=chars, required=chars) if chars is not None else _ANY
    if op is sre.IN:
        assert isinstance(av, list)
        if all(
            (kind is sre.LITERAL and chr(code).isspace())
            or (kind is sre.CATEGORY and code is sre.CATEGORY_SPACE)
            for kind, code in av
        ):
            return _Info(exact=_SPACE, required=None)
        if all(kind is sre.LITERAL for kind, _ in av):
            found: set[str] = set()
            for _, code in av:
                chars = _char(code, ignorecase)
                if chars is None:
                    return _ANY
                found |= chars
            return _Info(exact=frozenset(found), required=frozenset(found))
        return _ANY
    if op is sre.SUBPATTERN:
        assert isinstance(av, tuple)
        _group, add_flags, del_flags, body = av
        if (add_flags | del_flags) & re.IGNORECASE:
            raise _Unsupported
        return _sequence(body, ignorecase)
    if op is sre.ATOMIC_GROUP:
        return _sequence(av, ignorecase)  # type: ignore[arg-type]
    if op is sre.BRANCH:
        assert isinstance(av, tuple)
        alternatives = [_sequence(alt, ignorecase) for alt in av[1]]
        exacts = [a.exact for a in alternatives]
        requireds = [a.required for a in alternatives]
        exact = (
            frozenset().union(*(e for e in exacts if e is not None))
            if all(e is not None for e in exacts)
            else None
        )
        required = (
            frozenset().union(*(r for r in requireds if r is not None))
            if all(r is not None for r in requireds)
            else None
        )
        if exact is not None and len(exact) > _MAX_STRINGS:
            exact = None
        return _Info(exact=exact, required=_usable(required) if required is not None else None)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        assert isinstance(av, tuple)
        low, high, body = av
        inner = _sequence(body, ignorecase)
        if inner.exact == _SPACE:  # a run of white space: one space in the spaced text
            return _Info(exact=_SPACE if low >= 1 else _SPACE | {""}, required=None)
        if low == 0 and high == 1 and inner.exact is not None:
            return _Info(exact=inner.exact | {""}, required=None)
        if low >= 1 and inner.exact is not None:
            return _Info(exact=None, required=inner.required, repeated=inner.exact)
        return _Info(exact=None, required=inner.required if low >= 1 else None)
    if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
        # zero-width: matches the empty string (a lookaround's own text need not be inside
        # the match)
        return _Info(exact=frozenset({""}), required=None)
    return _ANY  # any character, classes, back-references, conditionals


def required_literals(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Strings one of which every match of ``pattern`` contains, once its white space runs are
    single spaces (and it is folded with :func:`fold_ignorecase` for a case-insensitive
    pattern), or None when there is no such set
    (or the pattern uses a construct this reader does not follow)."""
    ignorecase = bool(pattern.flags & re.IGNORECASE)
    try:
        info = _sequence(sre_parse.parse(pattern.pattern, pattern.flags), ignorecase)
    except _Unsupported:
        return None
    return info.required


class LiteralGate:
    """Which of ``patterns`` can match a text, from the literals their matches must contain.

    >>> gate = LiteralGate([re.compile(r"here for you", re.I), re.compile(r"\\d+")])
    >>> gate.candidates("I am HERE for you"), gate.candidates("nothing")
    ((True, True), (False, True))
    """

    __slots__ = ("_built", "_patterns", "_size")

    def __init__(self, patterns: Sequence[re.Pattern[str]]) -> None:
        self._patterns = tuple(patterns)
        self._size = len(self._patterns)
        # Read on first use, not at import: parsing a lexicon's patterns takes tens of ms, which
        # a command that never scores text (``policy explain``) should not pay.
        self._built: tuple[tuple[int, ...], _Automaton, _Automaton] | None = None

    def _build(self) -> tuple[tuple[int, ...], _Automaton, _Automaton]:
        ungated: list[int] = []
        words: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        for i, pattern in enumerate(self._patterns):
            literals = required_literals(pattern)
            if literals is None:
                ungated.append(i)
                continue
            folded = bool(pattern.flags & re.IGNORECASE)
            for literal in literals:
                words[folded].setdefault(literal, []).append(i)
        # one assignment: a thread that builds too only replaces it with an equal one
        self._built = (tuple(ungated), _Automaton(words[False]), _Automaton(words[True]))
        return self._built

    @classmethod
    def open(cls, size: int) -> LiteralGate:
        """A gate that lets every one of ``size`` patterns through (to compare against)."""
        return cls([re.compile("")] * size)

    def candidates(self, text: str) -> tuple[bool, ...]:
        """For each pattern, whether it may match ``text`` (False: it certainly does not)."""
        if not self._size:
            return ()
        ungated, exact, folded = self._built or self._build()
        hit = [False] * self._size
        for i in ungated:
            hit[i] = True
        try:
            if exact:
                exact.mark(_spaced(text), hit)
            if folded:
                folded.mark(_spaced(fold_ignorecase(text)), hit)
        except UnicodeEncodeError:  # a lone surrogate (no UTF-8 for the automaton): run all
            return (True,) * self._size
        return tuple(hit)


class _Automaton:
    __slots__ = ("_matcher", "_owners")

    def __init__(self, words: dict[str, list[int]]) -> None:
        literals = list(words)
        self._owners = [tuple(words[w]) for w in literals]
        self._matcher = (
            ahocorasick_rs.AhoCorasick(
                literals,
                matchkind=ahocorasick_rs.MatchKind.Standard,
                implementation=ahocorasick_rs.Implementation.DFA,
            )
            if literals
            else None
        )

    def __bool__(self) -> bool:
        return self._matcher is not None

    def mark(self, text: str, hit: list[bool]) -> None:
        if self._matcher is None:
            return
        for index, _start, _end in self._matcher.find_matches_as_indexes(text, overlapping=True):
            for owner in self._owners[index]:
                hit[owner] = True
