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

The figures themselves (:class:`Signals`, :class:`DayTotals`, ...) are values, defined in
:mod:`.figures` and re-exported here. Why this module is still over 400 lines: it is one
algorithm, :class:`UsageDigest`'s fold (in order, late, restored from a rollup), whose
invariants (a session counts once a local day, a credit stays open until the next event) run
through all its methods; cut apart, one invariant would be spread over files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from persona_mw.types import UsageEvent

from .config import SignalsConfig
from .figures import (
    CUE_NAMES,
    DayStats,
    DayTotals,
    FoldState,
    Signals,
    percentile_of,
    with_percentiles,
)

__all__ = [
    "CUE_NAMES",
    "DayStats",
    "DayTotals",
    "FoldState",
    "Signals",
    "UsageDigest",
    "compute_signals",
    "micros",
    "percentile_of",
    "with_percentiles",
]


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(ts: datetime, tz: str) -> datetime:
    return ts.astimezone(_zone(tz))


@dataclass(slots=True)
class _Day:
    """Running totals of one local day (the day of each event in that event's own zone)."""

    active_us: int = 0
    messages: int = 0
    sessions: int = 0
    late: int = 0
    analysed: int = 0
    cues: dict[str, int] = field(default_factory=dict)
    assistant: int = 0
    exposed: int = 0
    scored: int = 0
    relationship_hits: int = 0

    def totals(self) -> DayTotals:
        return DayTotals(
            self.active_us,
            self.messages,
            self.sessions,
            self.late,
            self.analysed,
            dict(self.cues),
            self.assistant,
            self.exposed,
            self.scored,
            self.relationship_hits,
        )

    @classmethod
    def of(cls, totals: DayTotals) -> _Day:
        return cls(
            totals.active_us,
            totals.messages,
            totals.sessions,
            totals.late,
            totals.analysed,
            dict(totals.cues),
            totals.assistant,
            totals.exposed,
            totals.scored,
            totals.relationship_hits,
        )


_US = timedelta(microseconds=1)
_MINUTE_US = 60_000_000


def micros(minutes: float) -> int:
    """A configured number of minutes as integer microseconds (the unit every fold adds)."""
    return timedelta(minutes=minutes) // _US


def _order(event: UsageEvent) -> tuple[datetime, bool]:
    """Time order; at the same instant the user's message comes before the reply."""
    return event.ts, event.role != "user"


def _utc(event: UsageEvent) -> UsageEvent:
    return event if event.ts.tzinfo is UTC else replace(event, ts=event.ts.astimezone(UTC))


class UsageDigest:
    """One user's events folded, in time order, into per-day totals: what :meth:`signals` needs.

    Adding an event costs O(1), so a live stage can keep a digest per user and add each new
    message instead of recomputing every past day per request (:func:`compute_signals` is this
    fold over a whole list). Only the last event's active-time credit is open (it depends on
    the next event); it is settled when the next one arrives and counted as the session tail
    until then. :meth:`add` refuses an event that sorts before the last one (returns False): the
    caller rebuilds from the sorted list, which is what a late-arriving event needs anyway.

    The usage stores keep this same fold as a rollup (:mod:`persona_mw.signals.usage_store`):
    :meth:`days` and :meth:`state` are what they store, :meth:`restore` rebuilds a digest from it.
    """

    __slots__ = (
        "_cap_us",
        "_config",
        "_days",
        "_idle_us",
        "_last",
        "_last_day",
        "_last_key",
        "_past",
        "_session_days",
        "_session_start",
        "_tail_us",
        "_touched",
        "count",
    )

    def __init__(self, config: SignalsConfig | None = None) -> None:
        self._config = config or SignalsConfig()
        self._idle_us = micros(self._config.session_idle_gap_minutes)
        self._cap_us = micros(self._config.active_gap_cap_minutes)
        self._tail_us = micros(self._config.session_tail_minutes)
        self._days: dict[date, _Day] = {}
        self._last: UsageEvent | None = None
        #: The local day of the last event: its active-time credit is still open.
        self._last_day: _Day | None = None
        self._last_key: date | None = None
        self._session_start: datetime | None = None
        self._session_days: set[date] = set()
        #: The window's days before "today", summed at the last :meth:`signals` (see
        #: :class:`_PastDays`), and the days changed since: a live stage adds one message of
        #: today per call, so the other days of the window are summed once, not per call.
        self._past: _PastDays | None = None
        self._touched: set[date] = set()
        #: Events folded in.
        self.count = 0

    @classmethod
    def of(cls, events: Iterable[UsageEvent], config: SignalsConfig | None = None) -> UsageDigest:
        """A digest of ``events`` in any order."""
        digest = cls(config)
        for event in sorted(map(_utc, events), key=_order):
            digest.add(event)
        return digest

    @classmethod
    def restore(
        cls,
        days: Mapping[date, DayTotals],
        state: FoldState | None,
        config: SignalsConfig | None = None,
    ) -> UsageDigest:
        """The digest whose :meth:`days` and :meth:`state` these are (a stored rollup)."""
        digest = cls(config)
        digest._days = {d: _Day.of(t) for d, t in days.items()}
        if state is not None:
            digest._last = _utc(state.last)
            digest._last_day = digest._days.setdefault(state.last_day, _Day())
            digest._last_key = state.last_day
            digest._session_start = state.session_start.astimezone(UTC)
            digest._session_days = set(state.session_days)
            digest.count = state.count
        return digest

    def days(self) -> dict[date, DayTotals]:
        """The per-day totals, settled credits only (the open one is in :meth:`state`)."""
        return {d: raw.totals() for d, raw in self._days.items()}

    def state(self) -> FoldState | None:
        """Where the fold stands; None before the first in-order event."""
        last, start = self._last, self._session_start
        if last is None or start is None:
            return None
        return FoldState(
            last=last,
            last_day=_local(last.ts, last.tz).date(),
            session_start=start,
            session_days=frozenset(self._session_days),
            count=self.count,
        )

    @property
    def last_ts(self) -> datetime | None:
        """Time of the latest event folded in (UTC), None when empty."""
        return None if self._last is None else self._last.ts

    def add(self, event: UsageEvent, *, late: bool = False) -> bool:
        """Fold in one event; False (and nothing changed) if it sorts before the last one.

        With ``late=True`` such an event is counted anyway — its message, late-night, cue and
        reply counts, in the session it falls in if that is the open one — but credits no
        active time (that depends on the order). The live stage and the rollups use this for an
        event that arrives after a later one of the same user beyond their reorder window.
        """
        ev = _utc(event)
        last = self._last
        if last is not None and _order(ev) < _order(last):
            if not late:
                return False
            start = self._session_start
            in_open = start is not None and (ev.ts - start) // _US >= -self._idle_us
            self._count(ev, in_open)
            self.count += 1
            return True
        if last is None or (ev.ts - last.ts) // _US > self._idle_us:
            if self._last_day is not None:
                self._last_day.active_us += self._tail_us
            self._session_start = ev.ts
            self._session_days = set()
        elif self._last_day is not None:
            self._last_day.active_us += min((ev.ts - last.ts) // _US, self._cap_us)
        if self._last_key is not None:  # its credit was settled (and it is no longer open)
            self._touched.add(self._last_key)
        self._last_key, self._last_day = self._count(ev, True)
        self._last = ev
        self.count += 1
        return True

    def _count(self, ev: UsageEvent, in_session: bool) -> tuple[date, _Day]:
        """The event's counts on its local day (everything but active time); that day."""
        cfg = self._config
        local = _local(ev.ts, ev.tz)
        key = local.date()
        self._touched.add(key)
        day = self._days.get(key)
        if day is None:
            day = self._days[key] = _Day()
        if ev.role == "user":
            day.messages += 1
            if in_session and key not in self._session_days:
                self._session_days.add(key)
                day.sessions += 1
            day.late += cfg.late_night_start_hour <= local.hour < cfg.late_night_end_hour
            if ev.analysed:
                day.analysed += 1
                for cue in ev.cues:
                    day.cues[cue] = day.cues.get(cue, 0) + 1
        else:
            day.assistant += 1
            day.exposed += bool(ev.exposure)
            if ev.relationship_score is not None:
                day.scored += 1
                day.relationship_hits += ev.relationship_score >= cfg.relationship_score_threshold
        return key, day

    def signals(
        self,
        now: datetime,
        *,
        user_id: str | None = None,
        tz: str | None = None,
        minor: bool | None = None,
        population: Sequence[float] | None = None,
        history: bool = True,
    ) -> Signals:
        """The signals at ``now``, which must not be before the last event (see
        :func:`compute_signals` for events that may lie after ``now``). ``history=False``
        leaves :attr:`Signals.history` empty (the live stage's ladder reads only the figures),
        which saves building a row per day of the window."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC))")
        # In UTC: Python subtracts datetimes sharing one ZoneInfo by wall clock (wrong across DST).
        now = now.astimezone(UTC)
        cfg = self._config
        last = self._last
        if last is not None and last.ts > now:
            raise ValueError("now is before the digest's last event; use compute_signals")
        zone = tz or (last.tz if last is not None else "UTC")
        is_minor = minor if minor is not None else bool(last is not None and last.minor)
        today = _local(now, zone).date()
        past = self._past_days(today)
        today_raw = self._days.get(today)
        today_minutes = self._minutes(today_raw) if today_raw is not None else 0.0
        today_messages = today_raw.messages if today_raw is not None else 0
        today_sessions = today_raw.sessions if today_raw is not None else 0
        cue_counts = dict(past.cues)
        late_total, late_hits = past.late_total, past.late_hits
        analysed, assistant_total = past.analysed, past.assistant
        exposed, scored, relationship_hits = past.exposed, past.scored, past.relationship_hits
        if today_raw is not None:  # today is in both windows (each is at least a day long)
            late_total += today_raw.messages
            late_hits += today_raw.late
            analysed += today_raw.analysed
            for cue, n in today_raw.cues.items():
                if cue in cue_counts:
                    cue_counts[cue] += n
            assistant_total += today_raw.assistant
            exposed += today_raw.exposed
            scored += today_raw.scored
            relationship_hits += today_raw.relationship_hits

        current_minutes = 0.0
        current_start: datetime | None = None
        if (
            last is not None
            and (now - last.ts) // _US <= self._idle_us
            and self._session_start is not None
        ):
            current_start = self._session_start
            current_minutes = (last.ts - self._session_start).total_seconds() / 60

        active_today = today_messages > 0
        first_day = today if today_raw is not None else past.first_day or today
        if past.first_day is not None and past.first_day < first_day:
            first_day = past.first_day
        # the window's days from the first one with use (the trend of a new user is not
        # dragged down by the days before they started)
        since_first = (first_day - (today - timedelta(days=cfg.window_days - 1))).days
        usage_trend = _trend(
            (*past.minutes, today_minutes)[max(since_first, 0) :], cfg.trend_min_days
        )
        n = cfg.window_days
        signals = Signals(
            user_id=user_id if user_id is not None else (last.user_id if last else ""),
            now=now,
            tz=zone,
            local_date=today,
            minor=is_minor,
            current_session_minutes=current_minutes,
            session_started_at=current_start,
            daily_active_minutes=today_minutes,
            messages_today=today_messages,
            sessions_today=today_sessions,
            active_day_streak=past.streak + 1 if active_today else past.streak,
            days_active_28=past.days_active + active_today,
            late_night_share=late_hits / late_total if late_total else 0.0,
            late_night_window_messages=late_total,
            usage_trend=usage_trend,
            mean_daily_minutes_28=(past.minutes_sum + today_minutes) / n,
            sessions_per_day_28=(past.sessions + today_sessions) / n,
            messages_per_day_28=(past.messages + today_messages) / n,
            percentile=None,
            cue_rates={c: (cue_counts[c] / analysed if analysed else 0.0) for c in CUE_NAMES},
            analysed_messages=analysed,
            fear_of_addiction=cue_counts["fear_of_addiction"] > 0,
            relationship_seeking_rate=relationship_hits / scored if scored else 0.0,
            assistant_messages_scored=scored,
            personalisation_exposure=exposed / assistant_total if assistant_total else 0.0,
            assistant_messages=assistant_total,
            history=self._history(today) if history else (),
        )
        if population is not None:
            signals = replace(
                signals, percentile=percentile_of(signals.mean_daily_minutes_28, population)
            )
        return signals

    def _minutes(self, raw: _Day) -> float:
        """The day's active minutes; the last event's open credit counts as a session tail."""
        return (raw.active_us + (self._tail_us if raw is self._last_day else 0)) / _MINUTE_US

    def _past_days(self, today: date) -> _PastDays:
        """Every day but ``today`` summed for :meth:`signals`: kept until a day other than
        ``today`` changes or the date moves on (the settled credit of a message that came after
        one of yesterday changes yesterday, and so does the open credit moving on)."""
        past, touched = self._past, self._touched
        if past is None or past.today != today or any(d != today for d in touched):
            past = self._past = self._sum_past_days(today)
        touched.clear()
        return past

    def _sum_past_days(self, today: date) -> _PastDays:
        cfg = self._config
        window_start = today - timedelta(days=cfg.window_days - 1)
        late_start = today - timedelta(days=cfg.late_night_window_days - 1)
        cues = dict.fromkeys(CUE_NAMES, 0)
        late_total = late_hits = analysed = scored = relationship_hits = 0
        assistant = exposed = 0
        first_day: date | None = None
        minutes = [0.0] * (cfg.window_days - 1)
        sessions = messages = days_active = 0
        for d, raw in self._days.items():
            if d == today:
                continue
            if first_day is None or d < first_day:
                first_day = d
            if d >= late_start:
                late_total += raw.messages
                late_hits += raw.late
            if d < window_start:
                continue
            analysed += raw.analysed
            for cue, n in raw.cues.items():
                if cue in cues:
                    cues[cue] += n
            assistant += raw.assistant
            exposed += raw.exposed
            scored += raw.scored
            relationship_hits += raw.relationship_hits
            if d < today:  # a day of the window's table (not one after today: other zones)
                minutes[(d - window_start).days] = self._minutes(raw)
                sessions += raw.sessions
                messages += raw.messages
                days_active += raw.messages > 0
        streak = 0
        cursor = today - timedelta(days=1)
        while (active := self._days.get(cursor)) is not None and active.messages > 0:
            streak += 1
            cursor -= timedelta(days=1)
        return _PastDays(
            today=today,
            minutes=tuple(minutes),
            minutes_sum=sum(minutes),
            sessions=sessions,
            messages=messages,
            days_active=days_active,
            streak=streak,
            first_day=first_day,
            late_total=late_total,
            late_hits=late_hits,
            analysed=analysed,
            cues=cues,
            assistant=assistant,
            exposed=exposed,
            scored=scored,
            relationship_hits=relationship_hits,
        )

    def _history(self, today: date) -> tuple[DayStats, ...]:
        """The window's days up to ``today``, oldest first, days without use included."""
        days = (today - timedelta(days=k) for k in range(self._config.window_days - 1, -1, -1))
        return tuple(
            _day_stats(d, got, self._minutes(got))
            if (got := self._days.get(d)) is not None
            else DayStats(day=d)
            for d in days
        )


@dataclass(frozen=True, slots=True)
class _PastDays:
    """A digest's days other than ``today``, summed as :meth:`UsageDigest.signals` needs them:
    the minutes of the window's days before today (oldest first) and their sums, the active
    days in a row up to yesterday, the earliest day, and the counts of the late-night and the
    signals' windows (days after today, which another time zone can make, count in these as
    they always did)."""

    today: date
    #: Active minutes of each of the window's days before today, oldest first.
    minutes: tuple[float, ...]
    minutes_sum: float
    sessions: int
    messages: int
    days_active: int
    streak: int
    first_day: date | None
    late_total: int
    late_hits: int
    analysed: int
    cues: Mapping[str, int]
    assistant: int
    exposed: int
    scored: int
    relationship_hits: int


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
    utc_now = now.astimezone(UTC)
    digest = UsageDigest.of((e for e in map(_utc, events) if e.ts <= utc_now), config)
    return digest.signals(now, user_id=user_id, tz=tz, minor=minor, population=population)


def _day_stats(day: date, raw: _Day, minutes: float) -> DayStats:
    return DayStats(
        day=day,
        active_minutes=minutes,
        messages=raw.messages,
        sessions=raw.sessions,
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
