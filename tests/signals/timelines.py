"""Synthetic timelines: users who chat in regular sessions, built from plain parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from persona_mw.signals import UsageEvent


def session(
    user: str,
    start: datetime,
    minutes: float,
    *,
    every: float = 3.0,
    tz: str = "UTC",
    minor: bool = False,
    cues: frozenset[str] = frozenset(),
    analysed: bool = False,
    reply_after_s: float = 20.0,
) -> list[UsageEvent]:
    """A user message every ``every`` minutes from ``start`` for ``minutes``, each answered
    ``reply_after_s`` seconds later."""
    start = start.astimezone(UTC)  # aware arithmetic in one ZoneInfo is by wall clock
    events = []
    t = 0.0
    while t <= minutes:
        ts = start + timedelta(minutes=t)
        events.append(
            UsageEvent(user, ts, "user", tz=tz, minor=minor, cues=cues, analysed=analysed)
        )
        events.append(
            UsageEvent(user, ts + timedelta(seconds=reply_after_s), "assistant", tz=tz, minor=minor)
        )
        t += every
    return events


def local(tz: str, *args: int) -> datetime:
    """A local wall-clock time in ``tz`` (fold=0 for ambiguous times)."""
    return datetime(*args, tzinfo=ZoneInfo(tz))  # type: ignore[misc]


def daily(
    user: str, first_day: datetime, days: int, minutes: float, *, tz: str = "UTC", **kw: object
) -> list[UsageEvent]:
    """The same session every day for ``days`` days, starting at ``first_day``'s local time."""
    out: list[UsageEvent] = []
    zone = ZoneInfo(tz)
    base = first_day.astimezone(zone)
    for d in range(days):
        day = (base.replace(tzinfo=None) + timedelta(days=d)).replace(tzinfo=zone)
        out += session(user, day, minutes, tz=tz, **kw)  # type: ignore[arg-type]
    return out
