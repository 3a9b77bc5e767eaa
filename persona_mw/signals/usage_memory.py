"""Usage in this process: :class:`MemoryUsageStore`, the embedded default (the contract is
:mod:`persona_mw.signals.usage_store`'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from persona_mw.types import ErasedUsage, UsageEvent

from .compute import UsageDigest
from .config import SignalsConfig
from .usage_rollup import (
    DEFAULT_REORDER_MAX_EVENTS,
    DEFAULT_REORDER_WINDOW_S,
    DEFAULT_RETENTION_DAYS,
    Encoder,
    UsageRollup,
    event_order,
    now_ms,
    reorder_settings,
    retention_seconds,
    score_floor,
    zone,
)

__all__ = ["MemoryUsageStore"]


@dataclass(slots=True)
class _MemoryUser:
    """One user in the memory store: raw events, the fold, and what waits to be folded."""

    digest: UsageDigest
    #: encoded member -> (score, event)
    events: dict[str, tuple[int, UsageEvent]] = field(default_factory=dict)
    pending: dict[str, tuple[int, UsageEvent]] = field(default_factory=dict)
    newest: int | None = None
    settled: int | None = None
    #: local day -> last write (epoch ms), like the Redis days set.
    day_writes: dict[date, int] = field(default_factory=dict)


class MemoryUsageStore:
    """Usage in a dict in this process: the embedded default (one process; gone on restart).

    Same contract as :class:`~persona_mw.signals.usage_redis.RedisUsageStore` (the same fold,
    reorder window and retention), so tests and small deployments behave like production. Safe
    for one event loop: no method awaits between reads and writes.
    """

    def __init__(
        self,
        *,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        signals: SignalsConfig | None = None,
        reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
        reorder_max_events: int = DEFAULT_REORDER_MAX_EVENTS,
    ) -> None:
        self.retention_s = retention_seconds(retention_days)
        self.config = signals or SignalsConfig()
        self._window, self._max_pending = reorder_settings(reorder_window_s, reorder_max_events)
        self._encode = Encoder(self.config)
        self._users: dict[str, _MemoryUser] = {}

    def _cutoff_ms(self) -> int | None:
        return None if self.retention_s is None else now_ms() - self.retention_s * 1000

    async def append(self, events: Sequence[UsageEvent]) -> int:
        encoded = [(event, *self._encode(event)) for event in events]  # validate the batch first
        added = 0
        now = now_ms()
        for event, score, member in encoded:
            mine = self._users.get(event.user_id)
            if mine is None:
                mine = self._users[event.user_id] = _MemoryUser(UsageDigest(self.config))
            if member in mine.events:
                continue
            mine.events[member] = (score, event)
            added += 1
            if mine.settled is not None and score < mine.settled:
                mine.digest.add(event, late=True)
                self._wrote(mine, event, now)
            else:
                mine.pending[member] = (score, event)
                mine.newest = score if mine.newest is None else max(mine.newest, score)
        for user in {event.user_id for event in events}:
            self._settle(self._users[user], now)
            self._trim(user)
        return added

    def _settle(self, mine: _MemoryUser, now: int) -> None:
        """Fold the pending events that left the reorder window, oldest first."""
        if not mine.pending or mine.newest is None:
            return
        oldest = min(score for score, _ in mine.pending.values())
        if oldest > mine.newest - self._window and len(mine.pending) <= self._max_pending:
            return  # the common case: nothing left the window
        order = sorted(mine.pending.items(), key=lambda kv: (kv[1][0], kv[0]))
        for member, (score, event) in order:
            if score > mine.newest - self._window and len(mine.pending) <= self._max_pending:
                break
            del mine.pending[member]
            mine.digest.add(event)
            mine.settled = score
            self._wrote(mine, event, now)

    def _wrote(self, mine: _MemoryUser, event: UsageEvent, now: int) -> None:
        state = mine.digest.state()
        days = {event.ts.astimezone(zone(event.tz)).date()}
        if state is not None:
            days.add(state.last_day)
        for day in days:
            mine.day_writes[day] = now

    def _trim(self, user: str) -> None:
        """Retention for one user, on their write (as Redis does in the append script)."""
        cutoff = self._cutoff_ms()
        if cutoff is None:
            return
        floor = 2 * cutoff * 1000
        mine = self._users[user]
        for member in [m for m, (score, _) in mine.events.items() if score < floor]:
            del mine.events[member]
        for day in [d for d, at in mine.day_writes.items() if at < cutoff]:
            del mine.day_writes[day]
        if not mine.events and not mine.day_writes and not mine.pending:
            del self._users[user]

    async def rollup(self, user_id: str) -> UsageRollup:
        mine = self._users.get(user_id)
        if mine is None:
            return UsageRollup(user_id)
        cutoff = self._cutoff_ms()
        kept = {d for d, at in mine.day_writes.items() if cutoff is None or at >= cutoff}
        pending = sorted(mine.pending.items(), key=lambda kv: (kv[1][0], kv[0]))
        return UsageRollup(
            user_id,
            {d: t for d, t in mine.digest.days().items() if d in kept},
            mine.digest.state(),
            tuple(event for _, (_, event) in pending),
        )

    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        floor = score_floor(since, self._cutoff_ms())
        mine = self._users.get(user_id)
        stored = mine.events.values() if mine else ()
        found = sorted(
            (e for score, e in stored if floor is None or score >= floor), key=event_order
        )
        return [e for e in found if since is None or e.ts >= since]

    async def users(self) -> list[str]:
        cutoff = self._cutoff_ms()
        floor = None if cutoff is None else 2 * cutoff * 1000
        return sorted(
            user
            for user, mine in self._users.items()
            if floor is None or any(score >= floor for score, _ in mine.events.values())
        )

    async def erase(self, user_id: str) -> ErasedUsage:
        mine = self._users.pop(user_id, None)
        if mine is None:
            return ErasedUsage()
        return ErasedUsage(events=len(mine.events), days=len(mine.day_writes))

    async def aclose(self) -> None:
        return None
