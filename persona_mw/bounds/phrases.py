"""Phrase lists: :class:`PhraseIndex` (many lists in one automaton) and :class:`PhraseDetector`
(one list as a :class:`~persona_mw.types.Detector`).

Phrase lists of many rules are compiled together into one Aho-Corasick automaton
(:class:`PhraseIndex`, a DFA of ``ahocorasick_rs``) over folded text (see :mod:`.normalise`): a
scan costs the same for 10 phrases or 10,000. Word boundaries come free: text and phrases are
folded so that every non-word character is a space, and each phrase is searched with a space on
both sides, so "Scunthorpe", "classic" and "assassin" never contain a hit.

Why one module of ~600 lines: :class:`PhraseIndex` is one data structure whose keys (gap
variants, compounds, obfuscation spots, one-gap phrases' sides, a lenient list's vocabulary,
a sorted list of live prefixes) are made in its constructor for the scan and ``live_start``
beside it; each piece only means something next to the others (the respelling itself is
:mod:`.spelling`, the de-obfuscation :mod:`.deobfuscate`).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import ahocorasick_rs

from ..types import Span
from .deobfuscate import (
    FOLD_REACH,
    LEET_SPOT_KEYS,
    SPOT_KEYS,
    WORD_LETTERS,
    leet_plausible,
    suspect_spots,
    unmask,
)
from .lookahead import LOOKAHEAD
from .normalise import INVISIBLE, Folded, fold, fold_phrase
from .spelling import Respeller

__all__ = [
    "GAP",
    "PhraseDetector",
    "PhraseHit",
    "PhraseIndex",
    "expand_family",
    "masked_spellings",
]


#: ``{a|b|}``: one group of alternatives in a phrase family.
_GROUP = re.compile(r"\{([^{}]*)\}")
#: The most phrases one family may expand to (each is a key of the automaton, several with
#: its gap variants): a family past it is a mistake in the list, not a wish.
MAX_FAMILY = 4096

#: Between the two parts of a gapped phrase ("gave away ... won t need"): at most this many
#: words and characters (the stream's context before a window, 48 characters, holds a part).
GAP = "..."
GAP_WORDS = 6
GAP_CHARS = 40


def expand_family(family: str) -> list[str]:
    """Every phrase of a phrase family: each ``{a|b|}`` group replaced by each of its
    alternatives (``""`` drops the group), runs of spaces made one. A phrase without groups is
    itself. A gapped family (``"a ... b"``) stays one, its two sides checked here and expanded
    by the index (its phrases are every side a with every side b: a product not worth
    writing out). Raises ``ValueError`` for an unbalanced brace, a family of more than
    :data:`MAX_FAMILY` phrases (per side) or a gap that is not between two sides."""
    if GAP in family:
        sides = family.split(GAP)
        if len(sides) != 2 or not all(expand_family(side) for side in sides):
            raise ValueError(f"phrase {family!r}: a gap ('...') must stand once, between two parts")
        return [" ... ".join(" ".join(side.split()) for side in sides)]
    if "{" not in family and "}" not in family:
        return [family]
    parts = _GROUP.split(family)  # text, group, text, group, ..., text
    if any("{" in text or "}" in text for text in parts[::2]):
        raise ValueError(f"phrase family {family!r}: unbalanced or nested braces")
    phrases = [""]
    for i, part in enumerate(parts):
        choices = part.split("|") if i % 2 else [part]
        phrases = [p + c for p in phrases for c in choices]
        if len(phrases) > MAX_FAMILY:
            raise ValueError(f"phrase family {family!r} expands to more than {MAX_FAMILY}")
    expanded = [" ".join(p.split()) for p in phrases]
    return [p for p in dict.fromkeys(expanded) if p]


@dataclass(frozen=True, slots=True)
class PhraseHit:
    """One phrase of one phrase list (``owner``: the list's index) at ``[start, end)``."""

    owner: int
    start: int
    end: int


class PhraseIndex:
    """Many phrase lists in one automaton. ``scan`` reports every hit of every list, overlapping
    hits included (``"kill"`` and ``"kill myself"`` both hit), mapped to original offsets.

    ``exceptions[k]`` (optional) are list ``k``'s context phrases: a hit of list ``k`` inside a
    hit of one of them does not count ("Moby Dick", "naked mole rat"). ``stems[k]`` are list
    ``k``'s words that also hit as the first or last part of a compound, the whole word being
    the hit ("fuckwit", "clusterfuck"). Obfuscations are seen
    through (see :mod:`.deobfuscate`): a multi-word phrase also matches joined ("killmyself"), and
    around spots where leetspeak, spaced-out or stretched letters may hide a word the text is
    matched again on de-obfuscated views. ``lenient[k]`` (optional): list ``k`` (and its context
    phrases) also matches a respelled view of the text, without filler words and with typos of
    its words corrected (see :mod:`.spelling`). ``masked[k]`` (optional): list ``k``'s phrases
    also match with one or two vowels of a word masked by a symbol (:func:`masked_spellings`).
    """

    def __init__(
        self,
        lists: Sequence[Iterable[str]],
        exceptions: Sequence[Iterable[str]] = (),
        stems: Sequence[Iterable[str]] = (),
        lenient: Sequence[bool] = (),
        masked: Sequence[bool] = (),
        *,
        compact: bool = False,
    ) -> None:
        """``compact``: the small automaton always (for an index of a few phrases, such as a
        user's own: as fast on text of that size, and ~40 kB instead of ~1.4 MB, most of it
        the obfuscation spots every index carries)."""
        # key -> (length, owners, part); a later key replaces an earlier one
        entries: dict[str, tuple[int, tuple[int, ...], int]] = {}
        owners: dict[str, set[int]] = {}
        longest = 0
        lenient_owners = {k for k, on in enumerate(lenient) if on}
        lenient_keys: list[str] = []  # the lenient lists' phrases and context phrases
        #: a gapped phrase ("a ... b") by number: its owner (a list, or a list's context)
        self._gap_owner: list[int] = []
        lenient_codes: set[int] = set()
        masked_owners = {k for k, on in enumerate(masked) if on}
        sources: list[tuple[int, list[str]]] = []
        unjoined: set[str] = set()  # masked spellings match only as written: "w on" not "won"
        for k, phrases in enumerate(lists):
            own = list(phrases)
            if k in masked_owners:
                spelled = masked_spellings(own)
                unjoined.update(map(fold_phrase, spelled))
                own += spelled
            sources.append((k, own))
        sources += [(_EXCEPTION - k, list(phrases)) for k, phrases in enumerate(exceptions)]
        for owner, phrases in sources:
            is_lenient = (owner if owner >= 0 else _EXCEPTION - owner) in lenient_owners
            for phrase in phrases:
                if GAP not in phrase:
                    key = fold_phrase(phrase)
                    if key:
                        owners.setdefault(key, set()).add(owner)
                        longest = max(longest, len(phrase))
                        if is_lenient:
                            lenient_keys.append(key)
                    continue
                # a gapped family: each side's phrases are keys of their own, owned by the
                # family's code (first side) and the code + 1 (second side)
                code = _GAP_BASE + 2 * len(self._gap_owner)
                self._gap_owner.append(owner)
                if is_lenient:
                    lenient_codes |= {code, code + 1}
                side_longest = []
                for part, side in enumerate(phrase.split(GAP)):
                    side_keys = [k for k in map(fold_phrase, expand_family(side)) if k]
                    for key in side_keys:
                        owners.setdefault(key, set()).add(code + part)
                    side_longest.append(max(map(len, side_keys), default=0))
                    if is_lenient:
                        lenient_keys += side_keys
                longest = max(longest, sum(side_longest) + GAP_CHARS)
        # hits on the respelled view count for the lenient lists and their context phrases
        self._lenient = frozenset(
            lenient_owners | {_EXCEPTION - k for k in lenient_owners} | lenient_codes
        )
        self._respeller = Respeller(lenient_keys) if lenient_owners else None
        keys: dict[str, set[int]] = {}
        for key, who in owners.items():
            for variant in _gap_variants(key):
                keys.setdefault(variant, set()).update(who)
            if " " in key and key not in unjoined:
                keys.setdefault(key.replace(" ", ""), set()).update(who)
        # every key a phrase can still grow into, sorted: a text tail is a proper prefix of one
        # when the first key not below it starts with it (a set of every prefix was hundreds
        # of MB once phrase families made tens of thousands of keys)
        grown: set[str] = set()
        for variant, who in keys.items():
            padded = f" {variant} "
            _add(entries, padded, (len(padded), tuple(sorted(who)), _WHOLE))
            grown.add(padded)
        stem_owners: dict[str, set[int]] = {}
        for owner, words in enumerate(stems):
            for word in words:
                key = fold_phrase(word)
                if key:
                    stem_owners.setdefault(key, set()).add(owner)
                    longest = max(longest, len(word) + _COMPOUND_REST)
        for key, who in stem_owners.items():
            grown.add(f" {key} ")  # " stem" is a proper prefix of it, as of any compound
            _add(entries, f" {key}", (len(key) + 1, tuple(sorted(who)), _FIRST_PART))
            _add(entries, f"{key} ", (len(key) + 1, tuple(sorted(who)), _LAST_PART))
        # the automaton exposes no state, so a live match is found the other way
        # round: a padded key has a proper prefix equal to the text from one of its last
        # spaces. Exception keys are in it too: one still being written may yet drop a hit.
        self._grown = sorted(grown)
        self._longest_key = max((len(p) - 1 for p in grown), default=0)
        # a compound ("clusterfuck") hits from the start of its word: the word being written
        # may still become one
        self._has_stems = bool(stem_owners)
        self._empty = not owners and not stem_owners
        if not self._empty:
            for spot, value in _SPOTS.items():  # where obfuscation may hide a word: no owners
                # a phrase of single letters ("k m s") keeps its key: it hits on its own
                if not (spot.startswith(" ") and spot.strip() in keys):
                    _add(entries, spot, value)
            for spot, value in _LEET_SPOTS.items():
                _add(entries, spot, value)
        self._values = list(entries.values())
        # A DFA over UTF-8 bytes: several times faster than a trie walk on model output (the
        # keys' first bytes are rare, so most of the text is skipped by its prefilter). Its
        # tables grow with every key byte: past _DFA_KEY_BYTES (phrase families on input, tens
        # of thousands of keys: 0.7 s and 220 MB per scanner) a contiguous NFA, ~50x smaller.
        key_bytes = sum(len(key) for key in entries)
        self._automaton = (
            ahocorasick_rs.AhoCorasick(
                list(entries),
                matchkind=ahocorasick_rs.MatchKind.Standard,
                implementation=ahocorasick_rs.Implementation.DFA
                if key_bytes <= _DFA_KEY_BYTES and not compact
                else ahocorasick_rs.Implementation.ContiguousNFA,
            )
            if entries
            else None
        )
        self._has_exceptions = any(o < 0 for who in owners.values() for o in who) or any(
            o < 0 for o in self._gap_owner
        )
        self._longest_part = max(
            (len(k) for k, who in owners.items() if max(who) >= _GAP_BASE), default=0
        )
        self._reach = longest + FOLD_REACH
        # A phrase can match text longer than itself (ligatures, zero-width characters,
        # decomposed accents, double gaps, spaced-out letters): allow twice its length.
        self.max_span = 2 * longest + FOLD_REACH + LOOKAHEAD

    def scan(self, text: str, start: int = 0) -> list[PhraseHit]:
        """The hits in ``text`` that start at or after ``start``. Invisible characters are set
        aside first (:func:`_visible`) and the spans mapped back over them: the de-obfuscation
        reads neighbours in the original text, and an invisible character between a letter
        and a leet symbol, or widening a window, must change no verdict."""
        if self._empty:
            return []
        visible = _visible(text)
        if visible is None:
            return self._scan(text, start)
        shown, at = visible
        return [
            PhraseHit(h.owner, at[h.start], at[h.end - 1] + 1)
            for h in self._scan(shown, bisect.bisect_left(at, start))
        ]

    def _scan(self, text: str, start: int) -> list[PhraseHit]:
        folded = fold(text)
        spots: list[int] = []
        found = self._match(folded, 0, spots)
        found |= self._match_respelled(folded, 0)
        spots = [at for at in spots if at >= 0 or leet_plausible(text, ~at)]
        spots = [at if at >= 0 else ~at for at in spots] + suspect_spots(text)
        if spots:
            for w_start, w_end in self._windows(text, spots):
                # a window cut inside a word must not make a word boundary there
                left = " " if w_start == 0 or text[w_start - 1].isspace() else "\0"
                right = " " if w_end == len(text) or text[w_end].isspace() else "\0"
                for view in unmask(text[w_start:w_end]):
                    found |= self._match(view, w_start, None, (left, right))
                    found |= self._match_respelled(view, w_start, (left, right))
        if self._gap_owner:
            found = self._join_gaps(found, text)
        if self._has_exceptions:
            found = _drop_excepted(found)
        kept = _drop_contained([(o, s, e) for o, s, e in found if o >= 0 and s >= start])
        hits = [PhraseHit(owner, s, e) for owner, s, e in kept]
        hits.sort(key=lambda h: (h.start, h.end, h.owner))
        return hits

    def live_start(self, text: str, start: int = 0) -> int:
        """Where a phrase could still begin: the start of the latest word from which the folded
        text, or a de-obfuscated view of it, is a proper prefix of a phrase or context phrase
        (with its gaps); the word being written when there are stems; the last cluster always
        (a combining mark after it changes how it folds); and, when the end of the text may
        still be de-obfuscated differently (a leet character, a single letter, a run of equal
        letters near it), its last ``FOLD_REACH`` characters. On the visible characters, as
        :meth:`scan` reads them."""
        visible = _visible(text)
        if visible is None:
            return self._live_start(text, start)
        shown, at = visible
        live = self._live_start(shown, bisect.bisect_left(at, start))
        return max(start, at[live]) if live < len(at) else len(text)

    def _live_start(self, text: str, start: int) -> int:
        n = len(text)
        if self._empty or start >= n:
            return n
        settled = _cluster_start(text, max(start, n - 1))
        # fold enough text before the unsettled tail to hold the longest phrase prefix, from a
        # whitespace boundary (de-obfuscation looks at neighbours)
        need = 2 * self._longest_key + 2 * self._reach
        reach = need
        while True:  # invisible characters fold to nothing: widen until enough text folds
            begin = max(0, settled - reach)
            while begin > 0 and not text[begin - 1].isspace() and settled - begin < 2 * reach:
                begin -= 1
            folded = fold(text[begin:settled])
            if len(folded.text) >= need or begin == 0:
                break
            reach *= 2
        live = min(settled, self._prefix_live(folded, begin, last_word=False))
        if self._gap_owner:  # a gapped phrase's second part may yet come
            live = min(live, self._gap_live(text, start))
        if self._respeller is not None:
            # the respelled view of the finished words; the word being written may become a
            # filler or a typo of a phrase word, so it is live itself
            respelled = self._respeller.view(folded, last_word=False)
            if respelled is not None:
                live = min(live, self._prefix_live(respelled, begin, last_word=False))
            last_space = folded.text.rfind(" ")
            if last_space + 1 < len(folded.text):
                live = min(live, begin + folded.original_span(last_space + 1, last_space + 2)[0])
            else:
                live = min(live, settled)
        if self._has_stems:  # the word the text ends in (the last cluster folded too)
            live = min(live, self._prefix_live(fold(text[begin:n]), begin, last_word=True))
        # an obfuscated phrase being written covers at most twice its length (spaced letters)
        masked_from = max(begin, n - 2 * self._longest_key - 2 * FOLD_REACH)
        if _MAYBE_MASKED.search(text, masked_from):
            while masked_from > begin and not text[masked_from - 1].isspace():
                masked_from -= 1
            unsettled = n
            window = max(begin, n - FOLD_REACH - 2)
            if _MASK_AT_END.search(text, window):
                # what more text could still change reads the same only up to FOLD_REACH back;
                # a lone letter after a word ("here i") changes only itself: the word before
                # it is not a single letter, so the space between them is never joined
                lone = _LONE_LETTER_END.search(text, window)
                if lone is None or _MASK_AT_END.search(text, window, n - 1):
                    unsettled = max(begin, n - FOLD_REACH)
                else:
                    unsettled = n - 1
                live = min(live, unsettled)
                if self._respeller is not None or self._has_stems:
                    # a lenient list respells whole words, and a stem's hit spans its whole
                    # word: the word the unsettled tail cuts into may still become one ("jp3n$3"
                    # is "je pense" once it ends) or grow ("shit!" may go on as "shit!!hello",
                    # one word once the symbols read as letters)
                    word = unsettled
                    while word > begin and not text[word - 1].isspace():
                        word -= 1
                    live = min(live, word)
            for view in unmask(text[masked_from:n]):
                kept = bisect.bisect_left(view.starts or (), unsettled - masked_from)
                settled_view = Folded(view.text[:kept], view.starts, view.ends)
                live = min(live, self._prefix_live(settled_view, masked_from))
                if self._respeller is not None:
                    respelled = self._respeller.view(settled_view, last_word=False)
                    if respelled is not None:
                        live = min(live, self._prefix_live(respelled, masked_from))
        return max(start, live)

    def _prefix_live(self, folded: Folded, shift: int, *, last_word: bool = True) -> int:
        """The original index (``shift`` ahead of ``folded``'s) of the earliest word from which
        ``folded`` is a proper prefix of a padded key, or (``last_word``, with stems) of the
        word it ends in; :data:`_NONE_LIVE` when none."""
        padded = " " + folded.text
        i = padded.find(" ", max(0, len(padded) - self._longest_key))
        while i != -1:
            if self._is_proper_prefix(padded[i:]):
                # the phrase would begin at padded[i + 1], folded index i
                if i < len(folded.text):
                    return shift + folded.original_span(i, i + 1)[0]
                break
            i = padded.find(" ", i + 1)
        last = padded.rfind(" ")
        if last_word and self._has_stems and last < len(folded.text):  # may become a compound
            return shift + folded.original_span(last, last + 1)[0]
        return _NONE_LIVE

    def _is_proper_prefix(self, tail: str) -> bool:
        """Whether ``tail`` is a proper prefix of a padded key (or of ``" stem "``)."""
        grown = self._grown
        at = bisect.bisect_left(grown, tail)
        if at < len(grown) and grown[at] == tail:
            at += 1
        return at < len(grown) and grown[at].startswith(tail)

    def _match(
        self,
        folded: Folded,
        shift: int,
        spots: list[int] | None,
        pads: tuple[str, str] = (" ", " "),
    ) -> set[tuple[int, int, int]]:
        """(owner, start, end) of every key in ``folded`` (its offsets ``shift`` behind the
        text's); exception hits have negative owners. Trigger keys go to ``spots``. ``pads``
        are what stands before and after ``folded``: a space, or ``"\\0"`` (no boundary)."""
        padded = f"{pads[0]}{folded.text}{pads[1]}"
        found: set[tuple[int, int, int]] = set()
        if self._automaton is None:
            return set()
        values = self._values
        for key_index, _, key_end in self._automaton.find_matches_as_indexes(
            padded, overlapping=True
        ):
            end_index = key_end - 1
            length, owners, part = values[key_index]
            if not owners:
                if spots is not None:
                    at = min(max(end_index - length, 0), len(folded.text) - 1)
                    if part == _LEET:  # the word's last seen character, marked for a check
                        at = min(end_index - 1, len(folded.text) - 1)
                        spots.append(~(folded.original_span(at, at + 1)[0] + shift))
                    else:
                        spots.append(folded.original_span(at, at + 1)[0] + shift)
                continue
            # padded[end_index - length + 1 : end_index + 1] is " phrase "; folded offsets are
            # one less (the leading pad).
            f_start, f_end = end_index - length + 1, end_index - 1
            if part == _FIRST_PART:  # " stem": the hit runs to the end of the word
                f_end = end_index + 1
                while f_end < len(padded) and padded[f_end].isalnum():
                    f_end += 1
                f_end = min(f_end, end_index + 1 + _COMPOUND_REST) - 1
            elif part == _LAST_PART:  # "stem ": the hit starts where the word does
                f_start = end_index - length
                while f_start > 0 and padded[f_start].isalnum():
                    f_start -= 1
                if 0 < end_index - length - f_start < _COMPOUND_HEAD:
                    continue  # "Barsch", "Marsch": a letter or two before it is no compound
                f_start = max(f_start, end_index - length - _COMPOUND_REST)
            o_start, o_end = folded.original_span(f_start, f_end)
            o_start += shift
            found.update((owner, o_start, o_end + shift) for owner in owners)
        return found

    def _join_gaps(self, found: set[tuple[int, int, int]], text: str) -> set[tuple[int, int, int]]:
        """``found`` with the hits of gapped phrases' parts replaced by the hits of the gapped
        phrases: a first part, then a second starting at most :data:`GAP_WORDS` words and
        :data:`GAP_CHARS` characters after it ends."""
        joined = {f for f in found if f[0] < _GAP_BASE}
        parts = [f for f in found if f[0] >= _GAP_BASE]
        seconds: dict[int, list[tuple[int, int]]] = {}
        for code, s, e in parts:
            if (code - _GAP_BASE) % 2:
                seconds.setdefault(code - 1, []).append((s, e))
        for code, a_start, a_end in parts:
            for b_start, b_end in seconds.get(code, ()):
                if _within_gap(text, a_end, b_start):
                    joined.add((self._gap_owner[(code - _GAP_BASE) // 2], a_start, b_end))
        return joined

    def _gap_live(self, text: str, start: int) -> int:
        """The start of the earliest first part of a gapped phrase whose second part may
        still come (the text after it is short enough), or :data:`_NONE_LIVE`."""
        n = len(text)
        reach = GAP_CHARS + 2 * self._longest_part + 2 * FOLD_REACH
        begin = max(start, n - reach - 2 * self._longest_part)
        while begin > start and not text[begin - 1].isspace():
            begin -= 1
        tail = text[begin:]
        folded = fold(tail)
        found = self._match(folded, begin, None) | self._match_respelled(folded, begin)
        for view in unmask(tail) if _MAYBE_MASKED.search(tail) else ():
            found |= self._match(view, begin, None) | self._match_respelled(view, begin)
        live = _NONE_LIVE
        for code, a_start, a_end in found:
            if code >= _GAP_BASE and not (code - _GAP_BASE) % 2 and n - a_end <= reach:
                live = min(live, a_start)
        return live

    def _match_respelled(
        self, folded: Folded, shift: int, pads: tuple[str, str] = (" ", " ")
    ) -> set[tuple[int, int, int]]:
        """The hits of the lenient lists (and their context phrases) on the respelled view of
        ``folded``."""
        if self._respeller is None:
            return set()
        respelled = self._respeller.view(folded)
        if respelled is None:
            return set()
        lenient = self._lenient
        return {f for f in self._match(respelled, shift, None, pads) if f[0] in lenient}

    def _windows(self, text: str, spots: list[int]) -> list[tuple[int, int]]:
        """Stretches around the spots, widened to whitespace, overlapping ones merged."""
        windows: list[tuple[int, int]] = []
        for spot in sorted(spots):
            lo = max(0, spot - self._reach)
            hi = min(len(text), spot + self._reach)
            while lo > 0 and not text[lo - 1].isspace() and spot - lo < 2 * self._reach:
                lo -= 1
            while hi < len(text) and not text[hi].isspace() and hi - spot < 2 * self._reach:
                hi += 1
            if windows and lo <= windows[-1][1]:
                windows[-1] = (windows[-1][0], max(hi, windows[-1][1]))
            else:
                windows.append((lo, hi))
        return windows


#: Owners from here up are parts of gapped phrases: ``_GAP_BASE + 2 * number + part``.
_GAP_BASE = 1 << 30


def _within_gap(text: str, end: int, start: int) -> bool:
    """Whether ``text[end:start]`` is a gap a gapped phrase allows."""
    return 0 <= start - end <= GAP_CHARS and len(text[end:start].split()) <= GAP_WORDS


#: Key bytes up to which the automaton is a DFA (the output scanner with the built-in packs
#: and 1,000 phrase rules is ~0.4 MB).
_DFA_KEY_BYTES = 1_000_000
#: ``_prefix_live`` when nothing is live (beyond any text).
_NONE_LIVE = 1 << 62
#: Text de-obfuscation could read differently from its plain folding: a leet character
#: touching a letter, two single letters in a row (or one at the end), a digit word, three
#: equal letters.
_MAYBE_MASKED = re.compile(
    r"[0-9@$!|+\u20ac\u00a9\u00a1](?=[^\W\d_])|(?<=[^\W\d_])[0-9@$!|+\u20ac\u00a9\u00a1]"
    r"|(?<![^\W_])[^\W_]\W{1,3}[^\W_](?![^\W_])|(?<![^\W_])[^\W_]\W*\Z"
    r"|(?<![^\W_])[24](?![^\W_])|([^\W\d_])\1\1"
)
#: The end of a text may still be de-obfuscated differently once more arrives: a leet character,
#: a single letter, a run of equal letters reaching it.
_MASK_AT_END = re.compile(
    r"[0-9@$!|+\u20ac\u00a9\u00a1]|(?<![^\W_])[^\W_](?![^\W_])|([^\W\d_])\1\Z"
)

#: Vowels a writer masks with a symbol ("f*ck", "p#ta"); consonants stay ("fu*k" is rarer).
_MASKABLE = frozenset("aeiou")


def masked_spellings(phrases: Iterable[str]) -> list[str]:
    """The spellings of ``phrases`` with one vowel of a word, or two of a word of six letters or
    more, masked by a symbol (folded text reads a symbol as a space): "fuck" -> "f ck",
    "bullshit" -> "b llsh t", "hijo de puta" -> "hijo de p ta". Only the first letter of a word
    is never masked, and a spelling is kept only when it leaves a lone consonant: "putain" ->
    "p tain" is kept, "put in" (English words) is not."""
    out: list[str] = []
    for phrase in phrases:
        if GAP in phrase:
            continue
        words = fold_phrase(phrase).split(" ")
        for w, word in enumerate(words):
            spots = [i for i, c in enumerate(word) if i > 0 and c in _MASKABLE]
            if len(word) < 4 or not spots:
                continue
            choices: list[tuple[int, ...]] = [(i,) for i in spots]
            if len(word) >= 6:
                choices += [(i, j) for i in spots for j in spots if j > i + 1]
            for masks in choices:
                spelled = "".join(" " if i in masks else c for i, c in enumerate(word))
                parts = spelled.split()
                if any(len(p) == 1 and p not in WORD_LETTERS for p in parts):
                    out.append(" ".join([*words[:w], *parts, *words[w + 1 :]]))
    return out


#: A single letter ending the text after whitespace and a word of two or more letters or digits.
_LONE_LETTER_END = re.compile(r"[^\W_]{2}\s+[^\W\d_]\Z")

#: Exception phrases of list k are stored as owner ``_EXCEPTION - k`` (negative).
_EXCEPTION = -1
#: How a key hits: a whole phrase, or a stem as the first or last part of a word.
_WHOLE, _FIRST_PART, _LAST_PART = 0, 1, 2
#: A leet trigger: its word is checked (``leet_plausible``) before it is de-obfuscated.
_LEET = 3
#: The most characters a compound adds to its stem ("clusterfuck": 7).
_COMPOUND_REST = 12
#: The fewest characters before a stem that make a compound of it ("dumbfuck", "Fettarsch"):
#: fewer are another word ending in the same letters ("Barsch", "Marsch", "harsh").
_COMPOUND_HEAD = 3


#: Every index's obfuscation spots, their entries made once (one tuple each, shared by all
#: indexes: a user's own small index would otherwise carry 2,000 new ones).
_SPOTS: dict[str, tuple[int, tuple[int, ...], int]] = {
    spot: (len(spot), (), _WHOLE) for spot in SPOT_KEYS
}
_LEET_SPOTS: dict[str, tuple[int, tuple[int, ...], int]] = {
    spot: (len(spot), (), _LEET) for spot in LEET_SPOT_KEYS
}


def _add(
    entries: dict[str, tuple[int, tuple[int, ...], int]],
    key: str,
    value: tuple[int, tuple[int, ...], int],
) -> None:
    entries.pop(key, None)  # the latest value, in the latest place
    entries[key] = value


def _drop_excepted(found: set[tuple[int, int, int]]) -> set[tuple[int, int, int]]:
    excepted: dict[int, list[tuple[int, int]]] = {}
    for owner, s, e in found:
        if owner < 0:
            excepted.setdefault(_EXCEPTION - owner, []).append((s, e))
    return {
        (owner, s, e)
        for owner, s, e in found
        if owner >= 0 and not any(xs <= s and e <= xe for xs, xe in excepted.get(owner, ()))
    }


_INVISIBLE_RUN = re.compile("[" + "".join(sorted(INVISIBLE)) + "]")


def _visible(text: str) -> tuple[str, list[int]] | None:
    """``text`` without its invisible characters, and where each kept one stands in ``text``;
    None when it has none (most text: one C-level check)."""
    if text.isascii() or _INVISIBLE_RUN.search(text) is None:
        return None
    at = [i for i, c in enumerate(text) if c not in INVISIBLE]
    return "".join(text[i] for i in at), at


def _drop_contained(found: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Each list's hits without those inside another of its hits: one finding, said once. A
    de-obfuscated view can find a word again from inside it (a window cut mid-word: "shitshit"
    at 0 and at 1); the whole text has windows a stream's tail does not, so the two reported
    different spans for the same redaction."""
    kept: list[tuple[int, int, int]] = []
    reach: dict[int, int] = {}  # per list, the furthest end of a hit kept so far
    for owner, s, e in sorted(found, key=lambda h: (h[0], h[1], -h[2])):
        if e <= reach.get(owner, -1):
            continue
        reach[owner] = e
        kept.append((owner, s, e))
    return kept


def _gap_variants(key: str) -> list[str]:
    """The phrase with its gaps between words one space wide, and with any one of them two
    spaces wide: text folds ". " and ", " (and a double space) to two spaces. One punctuated gap
    per phrase is how people write ("i want to die, honestly"); every combination of gaps made
    2**gaps keys a phrase and, with phrase families, an automaton of hundreds of thousands of
    keys (2026-12-04)."""
    words = key.split(" ")
    if len(words) == 1:
        return [key]
    variants = [key]
    for gap in range(1, len(words)):
        variants.append(" ".join(words[:gap]) + "  " + " ".join(words[gap:]))
    return variants


class PhraseDetector:
    """One phrase list as a :class:`Detector` (a :class:`PhraseIndex` of one list)."""

    name = "phrases"

    def __init__(
        self,
        phrases: Iterable[str],
        *,
        label: str = "phrase",
        unless: Iterable[str] = (),
        stems: Iterable[str] = (),
    ) -> None:
        self._index = PhraseIndex([list(phrases)], [list(unless)], [list(stems)])
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
