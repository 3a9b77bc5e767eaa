"""The scan engine: the rules of one stage compiled once, run on whole texts and on streams.

:class:`Scanner` runs every synchronous detector of a stage over a text (all phrase lists in one
automaton) and returns :class:`Hit` s; :func:`apply_redactions` and :func:`decisions_for` turn
hits into the released text and the explainable decisions. :class:`StreamFilter` is the
:class:`~persona_mw.types.OutputFilter` for one call: it holds back a bounded tail
(``hold_back`` = the longest text a rule needs + a margin), scans the rest with the released tail
as context, and releases only text no rule can still flag. Because every detector is local (a hit
depends only on the text within ``max_span`` of it), the released text of a stream equals the
whole-text result for any chunking — the property test in tests/bounds checks exactly that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

from ..types import Decision, Notice, Span
from .detectors import (
    Detector,
    PhraseIndex,
    RegexDetector,
    RelationshipDetector,
)
from .pii import PIIDetector
from .policy import PhrasesSpec, PIISpec, RegexSpec, RelationshipSpec, Rule

if TYPE_CHECKING:
    from ..types import CallContext

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_RELEASE_STEP",
    "Hit",
    "RuleInForce",
    "Scanner",
    "StreamFilter",
    "apply_redactions",
    "decisions_for",
    "detector_for",
    "hold_back_for",
    "notices_for",
]

_log = structlog.get_logger("persona_mw.bounds")

#: Characters of released text kept as context for the next window (word boundaries,
#: look-behinds).
_CONTEXT = 16
#: Hold-back beyond the longest text a rule needs (default; at most 64).
DEFAULT_MARGIN = 8
#: Characters gathered beyond the hold-back before the window is scanned again.
DEFAULT_RELEASE_STEP = 16


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


def detector_for(rule: Rule, *, scorer: Callable[[str], float] | None = None) -> Detector:
    """The detector a (non-phrase, non-judge) rule's spec describes."""
    spec = rule.detector
    if isinstance(spec, RegexSpec):
        return RegexDetector(spec.pattern, max_len=spec.max_len, case_sensitive=spec.case_sensitive)
    if isinstance(spec, PIISpec):
        return PIIDetector(spec.kinds, region=spec.region)
    if isinstance(spec, RelationshipSpec):
        return RelationshipDetector(
            threshold=spec.threshold, max_sentence=spec.max_sentence, scorer=scorer
        )
    raise ValueError(f"rule {rule.id!r}: no synchronous detector for {spec!r}")


class Scanner:
    """The synchronous rules of one stage, compiled. Stateless once built; shared by calls."""

    def __init__(
        self, rules: Sequence[RuleInForce], *, scorer: Callable[[str], float] | None = None
    ) -> None:
        phrase_rules = [r for r in rules if isinstance(r.rule.detector, PhrasesSpec)]
        self._phrase_rules = phrase_rules
        specs = [r.rule.detector for r in phrase_rules if isinstance(r.rule.detector, PhrasesSpec)]
        self._phrases = PhraseIndex(
            [s.phrases for s in specs], [s.unless for s in specs], [s.stems for s in specs]
        )
        self._others: list[tuple[RuleInForce, Detector]] = [
            (r, detector_for(r.rule, scorer=scorer))
            for r in rules
            if isinstance(r.rule.detector, RegexSpec | PIISpec | RelationshipSpec)
        ]
        spans = [self._phrases.max_span if phrase_rules else 0]
        spans += [d.max_span for _, d in self._others]
        #: The longest text one hit can cover plus its look-ahead: the hold-back need.
        self.max_span = max(spans)
        self.empty = not phrase_rules and not self._others

    def scan(self, text: str, start: int = 0) -> list[Hit]:
        """Hits starting at or after ``start`` (text before it is context), sorted by start.
        A detector that raises follows its rule's fail mode: a block over the scanned text for
        fail-closed rules, a log entry otherwise; it never raises."""
        hits: list[Hit] = []
        if self._phrase_rules:
            try:
                for h in self._phrases.scan(text, start):
                    r = self._phrase_rules[h.owner]
                    hits.append(Hit(r, Span(h.start, h.end, "phrase"), "phrases", r.rule.action))
            except Exception as exc:
                hits += [_failed(r, "phrases", exc, text, start) for r in self._phrase_rules]
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


def notices_for(hits: Sequence[Hit], seen: set[str]) -> list[Notice]:
    """The notices append/notify hits add (one per rule per call; ``seen`` tracks that)."""
    notices = []
    for hit in hits:
        rule = hit.rule.rule
        if hit.action in ("append", "notify") and rule.message and rule.id not in seen:
            seen.add(rule.id)
            position: Literal["before", "after"] = "before" if hit.action == "notify" else "after"
            notices.append(Notice(text=rule.message, source=rule.id, position=position))
    return notices


class StreamFilter:
    """The output filter for one call (see the module docstring). Fresh per call."""

    def __init__(
        self,
        scanner: Scanner,
        ctx: CallContext | None,
        *,
        hold_back: int,
        release_step: int = DEFAULT_RELEASE_STEP,
    ) -> None:
        self.stopped = False
        self.hold_back = hold_back
        #: Scan only once this many characters beyond the hold-back are waiting: a token is
        #: ~4 characters, and rescanning the window for each one would cost more than it buys.
        self.release_step = max(1, release_step)
        self._scanner = scanner
        self._ctx = ctx
        self._pending = ""
        self._context = ""
        self._offset = 0  # where _pending starts in the model's text
        self._seen: set[str] = set()
        #: Every decision this filter made (also appended to ``ctx.decisions``).
        self.decisions: list[Decision] = []

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if self._scanner.empty:  # no output rule for this user: nothing to hold back
            return text
        self._pending += text
        if len(self._pending) - self.hold_back < self.release_step:
            return ""
        return self._release(final=False)

    def finish(self) -> str:
        if self.stopped:
            return ""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        window = self._context + self._pending
        base = len(self._context)
        hits = self._scanner.scan(window, base) if not self._scanner.empty else []
        cut = len(window) if final else len(window) - self.hold_back
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
        self._context = window[max(0, cut - _CONTEXT) : cut]
        self._pending = window[cut:]
        self._offset += cut - base
        return released

    def _record(self, hits: list[Hit], *, offset: int) -> None:
        decisions = decisions_for(hits, "output", offset=offset)
        self.decisions += decisions
        if self._ctx is not None:
            self._ctx.decisions.extend(decisions)
            self._ctx.notices.extend(notices_for(hits, self._seen))


def hold_back_for(scanner: Scanner, margin: int = DEFAULT_MARGIN) -> int:
    """Characters a stream must hold back for ``scanner``: its longest need plus ``margin``."""
    return scanner.max_span + margin if not scanner.empty else 0
