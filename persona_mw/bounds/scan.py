"""The scan engine: the rules of one stage compiled once, run on whole texts and on streams.

:class:`Scanner` runs every synchronous detector of a stage over a text (all phrase lists in one
automaton) and returns :class:`Hit` s; :func:`apply_redactions` and :func:`decisions_for` turn
hits into the released text and the explainable decisions. :class:`StreamFilter` is the
:class:`~persona_mw.types.OutputFilter` for one call: at every chunk it releases all text up to
the earliest place where a hit of any rule could still begin (each detector's ``live_start``: the
word being written, a digit run that may become a card number, the sentence a sentence score
needs) and holds only that suffix, never cutting inside a hit or a candidate. Because every
detector is local, the released text of a stream equals the whole-text result for any chunking
and any invisible characters — the property tests in tests/bounds check exactly that.

The held suffix is capped at ``hold_back`` visible characters (the longest text a rule needs + a
margin; characters that fold to nothing, like zero-width spaces, do not count, up to
``_INVISIBLE_ALLOWANCE`` times the cap in all). A candidate longer than that (an endless digit
run) is cut where the cap falls, moved back to the nearest hit or candidate boundary: the
behaviour of a fixed hold-back, which is what the filter did before holding back only live text.
Time never releases text.

Why one module of ~430 lines: the scanner's ``live_start`` and the stream filter's release are
two halves of one guarantee (a stream releases what the whole text would), and they read best
side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from ..observability import get_logger
from ..types import Decision, Instruction, Notice, Span
from .classifier import classifier_detector
from .detectors import (
    Detector,
    PhraseIndex,
    RegexDetector,
    RelationshipDetector,
)
from .normalise import fold
from .pii import PIIDetector
from .policy import (
    USER_BLOCK_PHRASES,
    ClassifierSpec,
    PhrasesSpec,
    PIISpec,
    RegexSpec,
    RelationshipSpec,
    Rule,
)

if TYPE_CHECKING:
    from ..types import CallContext

__all__ = [
    "DEFAULT_MARGIN",
    "Hit",
    "RuleInForce",
    "Scanner",
    "StreamFilter",
    "apply_redactions",
    "decisions_for",
    "detector_for",
    "hold_back_for",
    "instructions_for",
    "notices_for",
]

_log = get_logger("persona_mw.bounds")

#: Visible characters of released text kept as context for the next window (word boundaries,
#: look-behinds): the longest is the words before a bare SSN ("social security number", up to
#: 35 characters); context phrases (``unless``) begin at most ~16 characters before a hit.
_CONTEXT = 48
#: Hold-back beyond the longest text a rule needs (default; at most 64).
DEFAULT_MARGIN = 8
#: Invisible characters do not count toward the hold-back cap or the context, up to this many
#: times their size in original characters (bounds the work per chunk of a flood of them).
_INVISIBLE_ALLOWANCE = 8


@dataclass(frozen=True, slots=True)
class RuleInForce:
    """A rule as it applies to one user, and why it is in force ("tier 1: law";
    "user opted in; allowed for adults")."""

    rule: Rule
    reason: str


@dataclass(frozen=True, slots=True)
class Hit:
    """``rule`` fired on ``span``. ``error`` marks a detector failure handled by the fail mode."""

    rule: RuleInForce
    span: Span
    detector: str
    action: Literal["block", "redact", "append", "notify", "log"]
    error: bool = False


@lru_cache(maxsize=256)
def detector_for(
    spec: RegexSpec | PIISpec | RelationshipSpec | ClassifierSpec,
    *,
    scorer: Callable[[str], float] | None = None,
) -> Detector:
    """The detector a (non-phrase, non-judge) rule's spec describes: one per spec and scorer,
    shared by every scanner that has the spec (detectors are stateless; their memo of recent
    candidates is then shared too)."""
    if isinstance(spec, RegexSpec):
        return RegexDetector(spec.pattern, max_len=spec.max_len, case_sensitive=spec.case_sensitive)
    if isinstance(spec, PIISpec):
        return PIIDetector(spec.kinds, region=spec.region)
    if isinstance(spec, RelationshipSpec):
        return RelationshipDetector(
            threshold=spec.threshold, max_sentence=spec.max_sentence, scorer=scorer
        )
    if isinstance(spec, ClassifierSpec):
        return classifier_detector(spec.model, threshold=spec.threshold)
    raise ValueError(f"no synchronous detector for {spec!r}")


class Scanner:
    """The synchronous rules of one stage, compiled. Stateless once built; shared by calls."""

    def __init__(
        self, rules: Sequence[RuleInForce], *, scorer: Callable[[str], float] | None = None
    ) -> None:
        #: The rules compiled here.
        self.rules = tuple(rules)
        phrase_rules = [r for r in rules if isinstance(r.rule.detector, PhrasesSpec)]
        # The policy's phrases (packs, deployer, laws) are the same for every user with the same
        # effective rules: their index is built once and shared (tens of MB and a third of a
        # second with the crisis families). A user's own block phrases get a small index of
        # their own, so one user's phrases never cost another index of everything.
        shared = [r for r in phrase_rules if r.rule.id != USER_BLOCK_PHRASES]
        own = [r for r in phrase_rules if r.rule.id == USER_BLOCK_PHRASES]
        self._phrase_groups: list[tuple[list[RuleInForce], PhraseIndex]] = []
        if shared:
            self._phrase_groups.append((shared, _shared_index(_index_key(shared))))
        if own:
            self._phrase_groups.append((own, _new_index(_index_key(own), compact=True)))
        self._others: list[tuple[RuleInForce, Detector]] = [
            (r, detector_for(r.rule.detector, scorer=scorer))
            for r in rules
            if isinstance(r.rule.detector, RegexSpec | PIISpec | RelationshipSpec | ClassifierSpec)
        ]
        spans = [index.max_span for _, index in self._phrase_groups] or [0]
        spans += [d.max_span for _, d in self._others]
        #: The longest text one hit can cover plus its look-ahead: the hold-back need.
        self.max_span = max(spans)
        #: Visible characters of released text a stream keeps for the next window: the
        #: look-behinds' need, or a sentence scorer's context and the character before it.
        self.context = max([_CONTEXT] + [getattr(d, "context", 0) + 1 for _, d in self._others])
        self.empty = not self._phrase_groups and not self._others

    def live_start(self, text: str, start: int = 0) -> int:
        """The earliest index ``>= start`` where a hit of any rule could still begin (see
        :meth:`persona_mw.bounds.detectors.Detector.live_start`). A detector that raises makes
        the whole text live: it will fail again, visibly, when the text is scanned."""
        live = len(text)
        for _, index in self._phrase_groups:
            try:
                live = min(live, index.live_start(text, start))
            except Exception:
                return start
        for _, detector in self._others:
            try:
                live = min(live, detector.live_start(text, start))
            except Exception:
                return start
        return live

    def scan(self, text: str, start: int = 0) -> list[Hit]:
        """Hits starting at or after ``start`` (text before it is context), sorted by start.
        A detector that raises follows its rule's fail mode: a block over the scanned text for
        fail-closed rules, a log entry otherwise; it never raises."""
        hits: list[Hit] = []
        for owners, index in self._phrase_groups:
            try:
                for h in index.scan(text, start):
                    r = owners[h.owner]
                    hits.append(Hit(r, Span(h.start, h.end, "phrase"), "phrases", r.rule.action))
            except Exception as exc:
                hits += [_failed(r, "phrases", exc, text, start) for r in owners]
        for r, detector in self._others:
            try:
                hits += [
                    Hit(r, s, detector.name, r.rule.action) for s in detector.detect(text, start)
                ]
            except Exception as exc:
                hits.append(_failed(r, detector.name, exc, text, start))
        hits.sort(key=lambda h: (h.span.start, h.span.end))
        return hits

    def segments(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Stretches a stream must not be cut inside: whole sentences for sentence scorers,
        candidate runs (digits, e-mail, IPv6) for PII, valid or not."""
        out: list[tuple[int, int]] = []
        for _, detector in self._others:
            segments = getattr(detector, "segments", None)
            if segments is not None:
                out += segments(text, start)
        return out


_IndexKey = tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], bool, bool], ...]


def _index_key(rules: Sequence[RuleInForce]) -> _IndexKey:
    specs = [r.rule.detector for r in rules if isinstance(r.rule.detector, PhrasesSpec)]
    return tuple((s.phrases, s.unless, s.stems, s.lenient, s.masked) for s in specs)


def _new_index(key: _IndexKey, *, compact: bool = False) -> PhraseIndex:
    lists = [spec[0] for spec in key]
    unless = [spec[1] for spec in key]
    stems = [spec[2] for spec in key]
    lenient = [spec[3] for spec in key]
    masked = [spec[4] for spec in key]
    return PhraseIndex(lists, unless, stems, lenient, masked, compact=compact)


#: Phrase indexes by content: every scanner with the same policy phrases shares one.
_shared_index = lru_cache(maxsize=32)(_new_index)


def _failed(r: RuleInForce, detector: str, exc: Exception, text: str, start: int) -> Hit:
    closed = r.rule.fails_closed
    _log.warning(
        "bounds.detector_failed",
        rule_id=r.rule.id,
        tier=r.rule.tier,
        detector=detector,
        error=repr(exc),
        fail_mode="closed" if closed else "open",
    )
    span = Span(start, max(start, len(text)), "detector-error")
    return Hit(r, span, detector, "block" if closed else "log", error=True)


def apply_redactions(text: str, hits: Sequence[Hit], *, offset: int = 0) -> str:
    """``text`` with every redact hit replaced; hit spans are ``offset`` ahead of ``text``.
    Overlapping redactions merge; the earliest (then longest) hit's replacement is used."""
    spans = sorted(
        ((h.span.start - offset, h.span.end - offset, h) for h in hits if h.action == "redact"),
        key=lambda t: (t[0], -t[1]),
    )
    if not spans:
        return text
    out = []
    pos = 0
    for start, end, hit in spans:
        if end <= pos:
            continue
        if start >= pos:
            out.append(text[pos:start])
            out.append(hit.rule.rule.replacement.replace("{label}", hit.span.label))
        pos = max(pos, end)
    out.append(text[pos:])
    return "".join(out)


def decisions_for(
    hits: Sequence[Hit], stage: Literal["input", "output"], *, offset: int = 0
) -> list[Decision]:
    """One decision per rule (and detector outcome), spans shifted by ``offset``."""
    grouped: dict[tuple[str, str, bool], list[Hit]] = {}
    for hit in hits:
        grouped.setdefault((hit.rule.rule.id, hit.action, hit.error), []).append(hit)
    decisions = []
    for group in grouped.values():
        first = group[0]
        rule = first.rule.rule
        reason = first.rule.reason + (
            "; detector failed, fail-closed" if first.error and first.action == "block" else ""
        )
        if first.error and first.action == "log":
            reason += "; detector failed, fail-open"
        decisions.append(
            Decision(
                rule_id=rule.id,
                tier=rule.tier,
                stage=stage,
                detector=first.detector,
                action=first.action,
                spans=tuple(
                    Span(h.span.start + offset, h.span.end + offset, h.span.label) for h in group
                ),
                message=rule.message,
                reason=reason,
            )
        )
    return decisions


def instructions_for(fired: Iterable[RuleInForce]) -> tuple[Instruction, ...]:
    """The instructions of the rules that fired, strictest tier first, one per text (a pack's
    phrase list and its classifier tell the model once)."""
    by_text: dict[str, Instruction] = {}
    for r in sorted(fired, key=lambda r: r.rule.tier):
        if r.rule.instruction and r.rule.instruction not in by_text:
            by_text[r.rule.instruction] = Instruction(r.rule.tier, r.rule.id, r.rule.instruction)
    return tuple(by_text.values())


def notices_for(hits: Sequence[Hit], seen: set[str]) -> list[Notice]:
    """The notices append/notify hits add: one per rule and one per text per call (a pack's
    phrase list and its classifier show the same resources once); ``seen`` tracks both."""
    notices = []
    for hit in hits:
        rule = hit.rule.rule
        if (
            hit.action in ("append", "notify")
            and rule.message
            and rule.id not in seen
            and rule.message not in seen
        ):
            seen.update((rule.id, rule.message))
            position: Literal["before", "after"] = "before" if hit.action == "notify" else "after"
            notices.append(Notice(text=rule.message, source=rule.id, position=position))
    return notices


class StreamFilter:
    """The output filter for one call (see the module docstring). Fresh per call."""

    def __init__(self, scanner: Scanner, ctx: CallContext | None, *, hold_back: int) -> None:
        self.stopped = False
        #: The cap on the held suffix, in visible characters.
        self.hold_back = hold_back
        self._scanner = scanner
        self._ctx = ctx
        self._pending = ""
        self._context = ""
        self._offset = 0  # where _pending starts in the model's text
        self._seen: set[str] = set()
        self._by_outcome: dict[tuple[str, str, str, str | None], Decision] = {}
        #: Every decision this filter made, one per rule outcome (also in ``ctx.decisions``).
        self.decisions: list[Decision] = []

    @property
    def held(self) -> int:
        """Characters received and not yet released (nor withheld)."""
        return len(self._pending)

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if self._scanner.empty:  # no output rule for this user: nothing to hold back
            return text
        self._pending += text
        return self._release(final=False)

    def finish(self) -> str:
        if self.stopped:
            return ""
        return self._release(final=True)

    def check_whole(self, text: str) -> str:
        """``feed(text) + finish()`` in one pass (:class:`~persona_mw.types.ChecksWholeText`):
        a complete reply holds nothing back, so its live suffix is not looked for and the text
        is scanned once."""
        if self.stopped:
            return ""
        if self._scanner.empty:
            return text
        self._pending += text
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        window = self._context + self._pending
        base = len(self._context)
        if final:
            cut = len(window)
        else:
            cut = max(self._scanner.live_start(window, base), self._cap(window, base))
            if cut <= base:  # all of it is live: nothing to scan yet
                return ""
        hits = self._scanner.scan(window, base)
        if not final:
            keep_whole = [(h.span.start, h.span.end) for h in hits]
            # segments are found from the window's start, which is itself a segment boundary:
            # starting anywhere else could see the tail of a run as a run of its own
            keep_whole += self._scanner.segments(window, base)
            moved = True
            while moved:  # never cut through a hit or a sentence: its verdict would change
                moved = False
                for start, end in keep_whole:
                    if start < cut < end:
                        cut, moved = start, True
        if cut <= base:
            return ""
        done = [h for h in hits if h.span.end <= cut]
        if done:
            self._record(done, offset=self._offset - base)
        if any(h.action == "block" for h in done):
            self.stopped = True
            if self._ctx is not None:
                self._ctx.outcome = "filtered"
            return ""
        released = apply_redactions(window[base:cut], done, offset=base)
        self._context = window[_visible_start(window, cut, self._scanner.context) : cut]
        self._pending = window[cut:]
        self._offset += cut - base
        return released

    def _cap(self, window: str, base: int) -> int:
        """Where the held suffix would reach ``hold_back`` visible characters."""
        if len(window) - base <= self.hold_back:  # the usual case: far below the cap
            return base
        return _visible_start(window, len(window), self.hold_back)

    def _record(self, hits: list[Hit], *, offset: int) -> None:
        """Add the decisions of released hits. A rule that fires again in a later release
        extends its decision's spans: one decision per rule outcome per call, however the
        reply was chunked."""
        for decision in decisions_for(hits, "output", offset=offset):
            key = (decision.rule_id, decision.action, decision.detector, decision.reason)
            earlier = self._by_outcome.get(key)
            if earlier is not None:
                decision = dataclasses.replace(decision, spans=earlier.spans + decision.spans)
            self._by_outcome[key] = decision
            _put(self.decisions, earlier, decision)
            if self._ctx is not None:
                _put(self._ctx.decisions, earlier, decision)
        if self._ctx is not None:
            self._ctx.notices.extend(notices_for(hits, self._seen))


def _put(decisions: list[Decision], earlier: Decision | None, decision: Decision) -> None:
    """Replace ``earlier`` (the same object) by ``decision``, or append it."""
    for i, d in enumerate(decisions):
        if d is earlier:
            decisions[i] = decision
            return
    decisions.append(decision)


def hold_back_for(scanner: Scanner, margin: int = DEFAULT_MARGIN) -> int:
    """The cap on what a stream holds back for ``scanner``, in visible characters: its longest
    need plus ``margin``. A stream holds less whenever less text is live."""
    return scanner.max_span + margin if not scanner.empty else 0


def _visible_start(text: str, end: int, count: int) -> int:
    """Where the ``count`` visible characters before ``end`` begin: characters that fold to
    nothing (zero-width, soft hyphen, ...) are passed over, at most ``_INVISIBLE_ALLOWANCE``
    times ``count`` characters back in all."""
    start = max(0, end - count)
    if text.isascii():
        return start
    floor = max(0, end - _INVISIBLE_ALLOWANCE * count)
    index, seen = end, 0
    while index > floor and seen < count:
        index -= 1
        if not _invisible(text[index]):
            seen += 1
    return index


@lru_cache(maxsize=4096)
def _invisible(char: str) -> bool:
    return not fold(char).text
