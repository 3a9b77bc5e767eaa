"""What the dependence signals are: the figures of one user (:class:`Signals`, per local day
:class:`DayStats`), what a rollup stores per local day (:class:`DayTotals`) and where a fold
stands (:class:`FoldState`), and percentiles against the deployment's population.

Values only; how they are computed from usage is :mod:`persona_mw.signals.compute`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from persona_mw.types import UsageEvent

__all__ = [
    "CUE_NAMES",
    "DayStats",
    "DayTotals",
    "FoldState",
    "Signals",
    "percentile_of",
    "with_percentiles",
]

#: The cue flags the detectors set on user messages (see :mod:`persona_mw.signals.cues`).
CUE_NAMES: tuple[str, ...] = (
    "dependence",
    "anthropomorphism",
    "support_seeking",
    "fear_of_addiction",
)


@dataclass(frozen=True, slots=True)
class DayStats:
    """One local day of one user: what the report's history table and charts show."""

    day: date
    active_minutes: float = 0.0
    messages: int = 0
    sessions: int = 0
    late_night_messages: int = 0
    analysed_messages: int = 0
    #: cue name -> number of analysed user messages that day with the cue.
    cues: Mapping[str, int] = field(default_factory=dict)

    @property
    def late_night_share(self) -> float:
        return self.late_night_messages / self.messages if self.messages else 0.0

    def cue_rate(self, cue: str) -> float:
        return self.cues.get(cue, 0) / self.analysed_messages if self.analysed_messages else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "active_minutes": round(self.active_minutes, 2),
            "messages": self.messages,
            "sessions": self.sessions,
            "late_night_messages": self.late_night_messages,
            "analysed_messages": self.analysed_messages,
            "cues": dict(sorted(self.cues.items())),
        }


@dataclass(frozen=True, slots=True)
class Signals:
    """One user's signals at ``now``. Counts are of user messages; minutes are active minutes."""

    user_id: str
    now: datetime
    tz: str
    local_date: date
    minor: bool
    current_session_minutes: float
    #: Start of the session still open at ``now`` (None when the last one has ended).
    session_started_at: datetime | None
    daily_active_minutes: float
    messages_today: int
    sessions_today: int
    active_day_streak: int
    days_active_28: int
    late_night_share: float
    #: User messages in the late-night window (the share's denominator).
    late_night_window_messages: int
    #: Relative change of daily active minutes per week over the window (OLS slope x 7 / mean).
    usage_trend: float
    mean_daily_minutes_28: float
    sessions_per_day_28: float
    messages_per_day_28: float
    #: Share of the deployment's users with lower mean daily minutes (mid-rank); None if unknown.
    percentile: float | None
    cue_rates: Mapping[str, float]
    analysed_messages: int
    fear_of_addiction: bool
    relationship_seeking_rate: float
    assistant_messages_scored: int
    personalisation_exposure: float
    assistant_messages: int
    #: The local days of the window, oldest first (days without use included).
    history: tuple[DayStats, ...] = ()

    def to_dict(self, *, history: bool = False) -> dict[str, Any]:
        """The stable JSON shape (the offline CLI prints this, plus ``actions``)."""
        out: dict[str, Any] = {
            "now": self.now.isoformat(),
            "tz": self.tz,
            "local_date": self.local_date.isoformat(),
            "minor": self.minor,
            "current_session_minutes": round(self.current_session_minutes, 2),
            "session_started_at": self.session_started_at.isoformat()
            if self.session_started_at
            else None,
            "daily_active_minutes": round(self.daily_active_minutes, 2),
            "messages_today": self.messages_today,
            "sessions_today": self.sessions_today,
            "active_day_streak": self.active_day_streak,
            "days_active_28": self.days_active_28,
            "late_night_share": round(self.late_night_share, 4),
            "late_night_window_messages": self.late_night_window_messages,
            "usage_trend": round(self.usage_trend, 4),
            "mean_daily_minutes_28": round(self.mean_daily_minutes_28, 2),
            "sessions_per_day_28": round(self.sessions_per_day_28, 3),
            "messages_per_day_28": round(self.messages_per_day_28, 3),
            "percentile": None if self.percentile is None else round(self.percentile, 4),
            "cue_rates": {k: round(v, 4) for k, v in self.cue_rates.items()},
            "analysed_messages": self.analysed_messages,
            "fear_of_addiction": self.fear_of_addiction,
            "relationship_seeking_rate": round(self.relationship_seeking_rate, 4),
            "assistant_messages_scored": self.assistant_messages_scored,
            "personalisation_exposure": round(self.personalisation_exposure, 4),
        }
        if history:
            out["history"] = [d.to_dict() for d in self.history]
        return out


@dataclass(frozen=True, slots=True)
class DayTotals:
    """The stored totals of one local day of one user: what a rollup keeps per day, and all the
    signals need of that day. Active time is integer microseconds, so a fold in Redis (Lua,
    whose numbers are doubles) and this one in Python add up to the same value."""

    active_us: int = 0
    #: User messages, sessions with a user message that day, of them in the late-night hours.
    messages: int = 0
    sessions: int = 0
    late: int = 0
    analysed: int = 0
    cues: Mapping[str, int] = field(default_factory=dict)
    #: Assistant messages, of them shaped by the profile, scored, relationship-seeking.
    assistant: int = 0
    exposed: int = 0
    scored: int = 0
    relationship_hits: int = 0


@dataclass(frozen=True, slots=True)
class FoldState:
    """Where a fold stands after its last in-order event: enough to go on folding (the open
    active-time credit, the open session) without the events themselves."""

    last: UsageEvent
    #: The last event's local day: its active-time credit is still open.
    last_day: date
    session_start: datetime
    #: Local days on which the open session already counted (a session counts once a day).
    session_days: frozenset[date]
    #: Events folded in, late ones included.
    count: int


def percentile_of(value: float, population: Sequence[float]) -> float:
    """Mid-rank percentile in [0, 1]: share of the population below ``value``, ties half-counted."""
    if not population:
        return 0.0
    below = sum(1 for p in population if p < value)
    ties = sum(1 for p in population if p == value)
    return (below + ties / 2) / len(population)


def with_percentiles(
    signals: Sequence[Signals], population: Sequence[float] | None = None
) -> list[Signals]:
    """Fill in ``percentile`` (of mean daily minutes over the window) for each user.

    Without ``population`` the users given are the population (what the offline CLI does).
    """
    values = (
        list(population) if population is not None else [s.mean_daily_minutes_28 for s in signals]
    )
    return [replace(s, percentile=percentile_of(s.mean_daily_minutes_28, values)) for s in signals]
