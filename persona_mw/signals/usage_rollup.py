"""What both usage stores share: the rollup a store returns (:class:`UsageRollup`), the one
encoding of an event, which is its identity in either store (writing it twice stores it once),
and the settings both validate alike (retention, the reorder window).

The encoding is compact JSON with short keys that omits defaults: ``t`` time (epoch
microseconds, UTC), ``r`` role (``u``/``a``), ``z`` zone, ``m`` minor, ``k`` tokens, ``c``
characters, ``q`` cue flags, ``s`` relationship-seeking score, ``x`` exposure, ``i`` request id,
``a`` analysed; and what the fold needs but Lua cannot work out (no time zones there): ``d`` local
day, ``l`` late night, ``h`` relationship-seeking. The user id is the key's; there is never
message text. An event's score orders it: 2 x epoch microseconds, +1 for a reply, so a message
sorts before its reply at the same instant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from persona_mw.errors import ConfigError
from persona_mw.types import UsageEvent

from .compute import DayTotals, FoldState, Signals, UsageDigest, micros
from .config import SignalsConfig

__all__ = [
    "DEFAULT_REORDER_MAX_EVENTS",
    "DEFAULT_REORDER_WINDOW_S",
    "DEFAULT_RETENTION_DAYS",
    "UsageRollup",
]

#: How long usage is kept by default. A heuristic: the signals look back 60 days at most
#: (``SignalsConfig.history_days``); 90 leaves room for a report on the last quarter. The app
#: passes ``history_days``.
DEFAULT_RETENTION_DAYS = 90.0
#: The reorder window (module docstring). Heuristic: longer than a long streamed reply, so a
#: request that ends well after a later one still folds in time order.
DEFAULT_REORDER_WINDOW_S = 120.0
#: At most this many events wait unfolded per user: bounds a heavy user's pending set and so the
#: readers' work (a load decodes them) whatever their rate; 50 requests in flight make 100 events.
DEFAULT_REORDER_MAX_EVENTS = 256

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class UsageRollup:
    """One user's stored usage as the signals need it: per-day totals of the folded events,
    where the fold stands, and the events still waiting in the reorder window (time order)."""

    user_id: str
    days: Mapping[date, DayTotals] = field(default_factory=dict)
    state: FoldState | None = None
    pending: tuple[UsageEvent, ...] = ()

    def digest(self, config: SignalsConfig | None = None) -> UsageDigest:
        """The digest of every stored event: the totals, then the pending events folded on."""
        digest = UsageDigest.restore(self.days, self.state, config)
        for event in self.pending:
            digest.add(event, late=True)
        return digest

    def signals(self, now: datetime, config: SignalsConfig | None = None, **kwargs: Any) -> Signals:
        """The signals at ``now`` (or at the latest event, if a clock behind the writers' puts
        ``now`` before it); ``kwargs`` as :meth:`UsageDigest.signals`."""
        digest = self.digest(config)
        last = digest.last_ts
        return digest.signals(now if last is None or last <= now else last, **kwargs)

    @property
    def events(self) -> int:
        """How many events the rollup holds (folded and pending)."""
        return (self.state.count if self.state else 0) + len(self.pending)


# -- encoding ---------------------------------------------------------------------------------


def event_micros(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(
            f"usage event time {ts.isoformat()} has no time zone; make it aware "
            "(e.g. datetime.now(UTC)) so it can be placed on the user's local day"
        )
    return (ts - EPOCH) // MICROSECOND


def event_score(micros_utc: int, role: str) -> int:
    """Time order with a message before its reply at the same instant (exact in a double)."""
    return 2 * micros_utc + (role != "user")


class Encoder:
    """Encodes events for one fold configuration: the derived fields (local day, late night,
    relationship-seeking) depend on the zone database and the config, not on Lua."""

    def __init__(self, config: SignalsConfig) -> None:
        self.config = config

    def __call__(self, event: UsageEvent) -> tuple[int, str]:
        """(score, member). Keys in a fixed order so one event has one encoding."""
        micros_utc = event_micros(event.ts)
        cfg = self.config
        local = event.ts.astimezone(zone(event.tz))
        body: dict[str, Any] = {"t": micros_utc, "r": "u" if event.role == "user" else "a"}
        if event.tz != "UTC":
            body["z"] = event.tz
        if event.minor:
            body["m"] = 1
        if event.tokens:
            body["k"] = event.tokens
        if event.chars:
            body["c"] = event.chars
        if event.cues:
            body["q"] = sorted(event.cues)
        if event.relationship_score is not None:
            body["s"] = event.relationship_score
            if event.relationship_score >= cfg.relationship_score_threshold:
                body["h"] = 1
        if event.exposure:
            body["x"] = sorted(event.exposure)
        if event.request_id:
            body["i"] = event.request_id
        if event.analysed:
            body["a"] = 1
        body["d"] = local.date().isoformat()
        if cfg.late_night_start_hour <= local.hour < cfg.late_night_end_hour:
            body["l"] = 1
        member = _encode_member(body)
        return event_score(micros_utc, event.role), member


#: One encoder for every member: ``json.dumps`` with these options builds a new one per call.
_encode_member = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def decode(user_id: str, member: str | bytes) -> UsageEvent:
    body = json.loads(member)
    return UsageEvent(
        user_id=user_id,
        ts=EPOCH + body["t"] * MICROSECOND,
        role="user" if body["r"] == "u" else "assistant",
        tz=body.get("z", "UTC"),
        minor=bool(body.get("m", 0)),
        tokens=int(body.get("k", 0)),
        chars=int(body.get("c", 0)),
        cues=frozenset(body.get("q", ())),
        relationship_score=body.get("s"),
        exposure=frozenset(body.get("x", ())),
        request_id=body.get("i", ""),
        analysed=bool(body.get("a", 0)),
    )


def retention_seconds(retention_days: float | None) -> int | None:
    if retention_days is None:
        return None
    if isinstance(retention_days, bool) or not retention_days > 0:
        raise ConfigError(
            f"retention_days must be a positive number of days (or None to keep usage "
            f"forever), not {retention_days!r}",
            field="retention_days",
        )
    return max(1, int(retention_days * 86400))


def reorder_settings(window_s: float, max_events: int) -> tuple[int, int]:
    """The reorder window in score units (2 per microsecond) and the pending cap, validated."""
    if isinstance(window_s, bool) or not window_s >= 0:
        raise ConfigError(
            f"reorder_window_s must be >= 0 seconds, not {window_s!r}", field="reorder_window_s"
        )
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
        raise ConfigError(
            f"reorder_max_events must be a whole number >= 0, not {max_events!r}",
            field="reorder_max_events",
        )
    return 2 * micros(window_s / 60), max_events


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event_order(event: UsageEvent) -> tuple[datetime, int]:
    return event.ts, 0 if event.role == "user" else 1


def score_floor(since: datetime | None, cutoff_ms: int | None) -> int | None:
    """The lowest score to read: ``since`` or the retention cutoff, whichever is later."""
    floors = [
        f
        for f in (
            None if since is None else 2 * event_micros(since),
            None if cutoff_ms is None else 2 * cutoff_ms * 1000,
        )
        if f is not None
    ]
    return max(floors) if floors else None
