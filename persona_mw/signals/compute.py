"""Dependence signals: a pure function of one user's usage events, the time now and the config.

Live traffic (:class:`~persona_mw.signals.stage.DependenceStage`) and offline analysis
(``persona-mw signals``) both call :func:`compute_signals`, so a timeline gives the same figures
either way. Everything is measured in the user's local time: each event's own IANA zone places it
on a local day and hour (so a user who travels is counted where they were), and "today" is the
local day of ``now`` in the zone of the user's latest event (or the profile's zone).

**Active minutes**, precisely: events are grouped into sessions (a session ends when the next event
comes more than ``session_idle_gap_minutes`` later). Within a session each event is credited the
real time until the next event, capped at ``active_gap_cap_minutes``; the last event of a session
is credited ``session_tail_minutes``. The credit counts on the local day of the event it belongs
to. Durations are real elapsed time, so DST changes neither add nor remove minutes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from .config import SignalsConfig
from .events import UsageEvent

__all__ = [
    "CUE_NAMES",
    "DayStats",
    "Signals",
    "compute_signals",
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


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(ts: datetime, tz: str) -> datetime:
    return ts.astimezone(_zone(tz))


@dataclass(slots=True)
class _Day:
    minutes: float = 0.0
    messages: int = 0
    sessions: set[int] = field(default_factory=set)
    late: int = 0
    analysed: int = 0
    cues: dict[str, int] = field(default_factory=dict)


def compute_signals(
    events: Iterable[UsageEvent],
    now: datetime,
    config: SignalsConfig | None = None,
    *,
    user_id: str | None = None,
    tz: str | None = None,
    minor: bool | None = None,
    population: Sequence[float] | None = None,
) -> Signals:
    """The signals of one user at ``now`` from their events (any order; later ones are ignored).

    ``tz`` and ``minor`` override what the events say (the live stage passes the profile's);
    ``population`` is the deployment's mean daily minutes per user, for the percentile.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC))")
    cfg = config or SignalsConfig()
    # In UTC: Python subtracts two datetimes sharing one ZoneInfo by wall clock, wrong across DST.
    now = now.astimezone(UTC)
    evs = sorted(
        (e if e.ts.tzinfo is UTC else replace(e, ts=e.ts.astimezone(UTC)) for e in events),
        key=lambda e: (e.ts, e.role != "user"),
    )
    evs = [e for e in evs if e.ts <= now]
    zone = tz or (evs[-1].tz if evs else "UTC")
    is_minor = minor if minor is not None else bool(evs and evs[-1].minor)
    today = _local(now, zone).date()
    window_start = today - timedelta(days=cfg.window_days - 1)
    late_start = today - timedelta(days=cfg.late_night_window_days - 1)

    idle = timedelta(minutes=cfg.session_idle_gap_minutes)
    cap = cfg.active_gap_cap_minutes
    days: dict[date, _Day] = {}
    session = -1
    session_start: datetime | None = None
    cue_counts = dict.fromkeys(CUE_NAMES, 0)
    analysed = 0
    late_total = late_hits = 0
    scored = relationship_hits = assistant_total = exposed = 0

    for i, ev in enumerate(evs):
        if i == 0 or ev.ts - evs[i - 1].ts > idle:
            session += 1
            session_start = ev.ts
        nxt = evs[i + 1] if i + 1 < len(evs) else None
        if nxt is not None and nxt.ts - ev.ts <= idle:
            credit = min((nxt.ts - ev.ts).total_seconds() / 60, cap)
        else:
            credit = cfg.session_tail_minutes
        local = _local(ev.ts, ev.tz)
        day = days.setdefault(local.date(), _Day())
        day.minutes += credit
        in_window = local.date() >= window_start
        if ev.role == "user":
            day.messages += 1
            day.sessions.add(session)
            late = cfg.late_night_start_hour <= local.hour < cfg.late_night_end_hour
            day.late += late
            if local.date() >= late_start:
                late_total += 1
                late_hits += late
            if ev.analysed:
                day.analysed += 1
                for cue in ev.cues:
                    day.cues[cue] = day.cues.get(cue, 0) + 1
                if in_window:
                    analysed += 1
                    for cue in ev.cues:
                        if cue in cue_counts:
                            cue_counts[cue] += 1
        elif in_window:
            assistant_total += 1
            exposed += bool(ev.exposure)
            if ev.relationship_score is not None:
                scored += 1
                relationship_hits += ev.relationship_score >= cfg.relationship_score_threshold

    current_minutes = 0.0
    current_start: datetime | None = None
    if evs and now - evs[-1].ts <= idle and session_start is not None:
        current_start = session_start
        current_minutes = (evs[-1].ts - session_start).total_seconds() / 60

    window = [today - timedelta(days=n) for n in range(cfg.window_days - 1, -1, -1)]
    history = tuple(_day_stats(d, days.get(d)) for d in window)
    active = {d for d, s in days.items() if s.messages}
    streak = 0
    cursor = today if today in active else today - timedelta(days=1)
    while cursor in active:
        streak += 1
        cursor -= timedelta(days=1)

    minutes = [s.active_minutes for s in history]
    first_day = min(days) if days else today
    usage_trend = _trend(
        [s.active_minutes for s in history if s.day >= first_day], cfg.trend_min_days
    )
    today_stats = days.get(today, _Day())
    n = cfg.window_days
    signals = Signals(
        user_id=user_id if user_id is not None else (evs[-1].user_id if evs else ""),
        now=now,
        tz=zone,
        local_date=today,
        minor=is_minor,
        current_session_minutes=current_minutes,
        session_started_at=current_start,
        daily_active_minutes=today_stats.minutes,
        messages_today=today_stats.messages,
        sessions_today=len(today_stats.sessions),
        active_day_streak=streak,
        days_active_28=sum(1 for s in history if s.messages),
        late_night_share=late_hits / late_total if late_total else 0.0,
        late_night_window_messages=late_total,
        usage_trend=usage_trend,
        mean_daily_minutes_28=sum(minutes) / n,
        sessions_per_day_28=sum(s.sessions for s in history) / n,
        messages_per_day_28=sum(s.messages for s in history) / n,
        percentile=None,
        cue_rates={c: (cue_counts[c] / analysed if analysed else 0.0) for c in CUE_NAMES},
        analysed_messages=analysed,
        fear_of_addiction=cue_counts["fear_of_addiction"] > 0,
        relationship_seeking_rate=relationship_hits / scored if scored else 0.0,
        assistant_messages_scored=scored,
        personalisation_exposure=exposed / assistant_total if assistant_total else 0.0,
        assistant_messages=assistant_total,
        history=history,
    )
    if population is not None:
        signals = replace(
            signals, percentile=percentile_of(signals.mean_daily_minutes_28, population)
        )
    return signals


def _day_stats(day: date, raw: _Day | None) -> DayStats:
    if raw is None:
        return DayStats(day=day)
    return DayStats(
        day=day,
        active_minutes=raw.minutes,
        messages=raw.messages,
        sessions=len(raw.sessions),
        late_night_messages=raw.late,
        analysed_messages=raw.analysed,
        cues=dict(raw.cues),
    )


def _trend(values: Sequence[float], min_days: int) -> float:
    """OLS slope of daily minutes, per week, relative to the mean: +0.1 = "10 % more per week"."""
    n = len(values)
    mean = sum(values) / n if n else 0.0
    if n < min_days or mean <= 0:
        return 0.0
    x_mean = (n - 1) / 2
    sxx = sum((x - x_mean) ** 2 for x in range(n))
    sxy = sum((x - x_mean) * (y - mean) for x, y in enumerate(values))
    return (sxy / sxx) * 7 / mean


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
