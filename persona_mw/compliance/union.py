"""The effective tier 1 of one user: the union of the duties of every law that applies.

:func:`compliance_for` is a pure function (memoised): every duty of every applicable law whose
audience includes the user is in force; where two laws ask for the same thing at different
intervals the shortest wins, and every part remembers which laws (and sections) require it, so
``persona-mw policy explain`` and the replay's ``actions_log`` can say why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from .law import (
    ContentBanDuty,
    CrisisDuty,
    DisclosureDuty,
    MarkingDuty,
    NeverClaimHumanDuty,
    ReminderDuty,
    ReportDuty,
    jurisdiction,
)

__all__ = ["Compliance", "Interval", "LawRef", "Requirement", "compliance_for"]

_AT_START_RANK = {"none": 0, "first": 1, "daily": 2}


@dataclass(frozen=True, slots=True)
class LawRef:
    """A law and the section behind one duty."""

    code: str
    cite: str


@dataclass(frozen=True, slots=True)
class Requirement:
    """A duty in force (e.g. a content ban) and the laws that require it."""

    by: tuple[LawRef, ...]

    @property
    def laws(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.code for ref in self.by))


@dataclass(frozen=True, slots=True)
class Interval:
    """A recurring duty: the shortest interval any applicable law asks for, and those laws."""

    minutes: float
    by: tuple[LawRef, ...]

    @property
    def laws(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.code for ref in self.by))


@dataclass(frozen=True, slots=True)
class Compliance:
    """What the applicable laws require for one user (the audience already applied)."""

    laws: tuple[str, ...] = ()
    #: Disclosure at the start: "daily" (first interaction of each day) beats "first" (the very
    #: first interaction); None: no law asks.
    disclosure_at_start: Literal["daily", "first"] | None = None
    disclosure_at_start_by: tuple[LawRef, ...] = ()
    #: Disclosure again during continuing interaction.
    disclosure_every: Interval | None = None
    #: The break + not-human reminder during a session.
    reminder_every: Interval | None = None
    #: "interrupt" beats "refer".
    crisis: Literal["refer", "interrupt"] | None = None
    crisis_by: tuple[LawRef, ...] = ()
    #: Pack rule id -> the laws that require it (content bans, crisis, never claim human).
    rules: tuple[tuple[str, Requirement], ...] = ()
    marking: Requirement | None = None
    reports: tuple[tuple[LawRef, ReportDuty], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.laws

    def rule_laws(self, rule_id: str) -> Requirement | None:
        return next((req for rid, req in self.rules if rid == rule_id), None)

    def explain(self) -> list[dict[str, Any]]:
        """Per duty, which law (and section) requires it: plain data for the CLI and the API."""

        def refs(by: Iterable[LawRef]) -> list[dict[str, str]]:
            return [{"law": ref.code, "cite": ref.cite} for ref in by]

        out: list[dict[str, Any]] = []
        if self.disclosure_at_start is not None:
            out.append(
                {
                    "duty": "ai_disclosure_at_start",
                    "when": self.disclosure_at_start,
                    "required_by": refs(self.disclosure_at_start_by),
                }
            )
        if self.disclosure_every is not None:
            out.append(
                {
                    "duty": "ai_disclosure_every",
                    "minutes": self.disclosure_every.minutes,
                    "required_by": refs(self.disclosure_every.by),
                }
            )
        if self.reminder_every is not None:
            out.append(
                {
                    "duty": "break_and_not_human_reminder",
                    "minutes": self.reminder_every.minutes,
                    "required_by": refs(self.reminder_every.by),
                }
            )
        if self.crisis is not None:
            out.append(
                {
                    "duty": "crisis_protocol",
                    "behaviour": self.crisis,
                    "required_by": refs(self.crisis_by),
                }
            )
        for rule_id, req in self.rules:
            out.append({"duty": "rule", "rule": rule_id, "required_by": refs(req.by)})
        if self.marking is not None:
            out.append({"duty": "machine_readable_marking", "required_by": refs(self.marking.by)})
        for ref, report in self.reports:
            out.append(
                {
                    "duty": "report",
                    "figures": list(report.figures),
                    "period": report.period,
                    "recipient": report.recipient,
                    "required_by": refs([ref]),
                }
            )
        return out


def _applies(audience: str, minor: bool) -> bool:
    return audience == "all" or (audience == "minors") == minor


def _shorter(current: Interval | None, minutes: float, ref: LawRef) -> Interval:
    if current is None or minutes < current.minutes:
        return Interval(minutes, (ref,))
    if minutes == current.minutes:
        return Interval(minutes, (*current.by, ref))
    return current


def compliance_for(
    codes: Iterable[str], *, minor: bool, misleading_context: bool = False
) -> Compliance:
    """The union of the duties of the laws ``codes`` for a user who is (or is not) a known
    minor. Pure; raises PolicyError for an unknown code. A user not known to be a minor gets
    the duties for adults (the laws' minor duties need the operator to know)."""
    return _compliance(tuple(sorted(set(codes))), minor, misleading_context)


@lru_cache(maxsize=256)
def _compliance(codes: tuple[str, ...], minor: bool, misleading: bool) -> Compliance:
    at_start: Literal["daily", "first"] | None = None
    at_start_by: list[LawRef] = []
    disclosure_every: Interval | None = None
    reminder_every: Interval | None = None
    crisis: Literal["refer", "interrupt"] | None = None
    crisis_by: list[LawRef] = []
    rules: dict[str, list[LawRef]] = {}
    marking: list[LawRef] = []
    reports: list[tuple[LawRef, ReportDuty]] = []

    for code in codes:
        for duty in jurisdiction(code).duties:
            ref = LawRef(code, duty.cite)
            if isinstance(duty, DisclosureDuty | ReminderDuty | ContentBanDuty) and not _applies(
                duty.audience, minor
            ):
                continue
            if isinstance(duty, DisclosureDuty):
                if duty.condition == "misleading_context" and not misleading:
                    continue
                if duty.at_start != "none":
                    rank = _AT_START_RANK[duty.at_start]
                    if at_start is None or rank > _AT_START_RANK[at_start]:
                        at_start, at_start_by = duty.at_start, [ref]
                    elif rank == _AT_START_RANK[at_start]:
                        at_start_by.append(ref)
                if duty.every_hours is not None:
                    disclosure_every = _shorter(disclosure_every, duty.every_hours * 60, ref)
            elif isinstance(duty, ReminderDuty):
                reminder_every = _shorter(reminder_every, duty.every_hours * 60, ref)
            elif isinstance(duty, CrisisDuty):
                # Every law asking for a protocol is listed; the strictest behaviour wins.
                if crisis != "interrupt":
                    crisis = duty.behaviour
                crisis_by.append(ref)
            elif isinstance(duty, MarkingDuty):
                marking.append(ref)
            elif isinstance(duty, ReportDuty):
                reports.append((ref, duty))
            if isinstance(duty, CrisisDuty | ContentBanDuty | NeverClaimHumanDuty):
                for rule_id in duty.rules:
                    rules.setdefault(rule_id, []).append(ref)

    return Compliance(
        laws=codes,
        disclosure_at_start=at_start,
        disclosure_at_start_by=tuple(at_start_by),
        disclosure_every=disclosure_every,
        reminder_every=reminder_every,
        crisis=crisis,
        crisis_by=tuple(crisis_by),
        rules=tuple((rule_id, Requirement(tuple(by))) for rule_id, by in rules.items()),
        marking=Requirement(tuple(marking)) if marking else None,
        reports=tuple(reports),
    )
