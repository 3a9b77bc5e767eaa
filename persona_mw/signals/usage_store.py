"""Where usage events live: in this process (the embedded default) or in Redis.

Both stores keep the same contract (one test suite runs against both):

- ``append(events)`` writes a batch in at most one round trip (Redis: one non-transactional
  pipeline of one ``EVALSHA`` per user plus the user list; on a Cluster, one per node, sent in
  parallel by redis-py's cluster pipeline). The script is loaded only when the server says it
  does not know it (after a start or restart), then the batch is sent again. Writing the same
  event twice stores it once: an event's identity is its encoded form (time to the
  microsecond, role, request id and every other field), so a batch retried after a timeout that
  did reach the server does not double-count.
- ``events(user_id, since)`` returns the user's events in time order, never older than the
  retention window.
- ``users()`` returns the raw ids of users with events inside the retention window (for
  percentiles and the aggregate report).
- ``erase(user_id)`` removes every key of the user's usage and returns how many events went.

**Sessions are not stored.** A session is a function of the timestamps (it ends after an idle gap,
30 minutes by default): :func:`~persona_mw.signals.compute.compute_signals` derives it from the
events, for live traffic and offline files alike, so there is one definition and it does not
depend on the order in which processes happen to write. An event's session id, where one is
wanted, is the start time of the session it falls in.

Redis layout (keys from :mod:`persona_mw.stores.keys`; all of one user's keys share the hash tag
``{u:<digest>}``, so they sit in one Redis Cluster slot)::

    {prefix}{u:<digest>}:usage      sorted set: member = one event as compact JSON,
                                    score = epoch milliseconds; trimmed to the retention window
                                    on every write, EXPIRE = retention after the last write
    {prefix}{u:<digest>}:usage:id   string: the raw user id (so ``users()`` can answer with ids);
                                    same EXPIRE, same slot, erased with the rest
    {prefix}{u:<digest>}:keys       the user's key index (shared with the profile store), which
                                    lists both keys above: erasing the user through any store
                                    finds them without a SCAN
    {prefix}usage:users             sorted set, deployment-wide: user tag -> time of their
                                    latest event (epoch ms), trimmed to the retention window.
                                    It holds tags only, never raw ids, and lives in its own
                                    slot (on a cluster the batch pipeline reaches it as a separate
                                    command; nothing needs it atomic with the per-user keys)

The compact JSON has short keys and omits defaults: ``t`` time (epoch microseconds, UTC), ``r``
role (``u``/``a``), ``z`` zone, ``m`` minor, ``k`` tokens, ``c`` characters, ``q`` cue flags,
``s`` relationship-seeking score, ``x`` exposure, ``i`` request id, ``a`` analysed. The user id is
the key's; it is not repeated in each member. There is never message text.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from redis.exceptions import NoScriptError, RedisError

from persona_mw.errors import ConfigError, StoreError
from persona_mw.stores.keys import DEFAULT_PREFIX, index_key, user_key, user_tag
from persona_mw.stores.loops import HomeLoop, connector, on_home_loop

from .events import UsageEvent

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "MemoryUsageStore",
    "RedisUsageStore",
    "UsageStore",
    "open_usage_store",
]

#: How long usage is kept by default. A heuristic: the signals look back 60 days at most
#: (``SignalsConfig.history_days``); 90 leaves room for a report on the last quarter.
DEFAULT_RETENTION_DAYS = 90.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# KEYS: events, id, index. ARGV: cutoff ms ('' when retention is off), TTL s ('0': none), user
# id, then score, member pairs. One call instead of five commands per user: measured 2.8x the
# events/s of the plain-command pipeline here, since redis-py's packing of each command is what
# costs (the server's work is the same).
_APPEND = """
local added = redis.call('ZADD', KEYS[1], unpack(ARGV, 4))
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[3], KEYS[1], KEYS[2])
return added
"""
_APPEND_SHA = hashlib.sha1(_APPEND.encode()).hexdigest()
#: Events per EVALSHA: keeps ``unpack`` far below Lua's C-stack limit (~8000 values).
_MEMBERS_PER_CALL = 1000
_MICROSECOND = timedelta(microseconds=1)


@runtime_checkable
class UsageStore(Protocol):
    """Usage events per user. Implementations raise :class:`~persona_mw.errors.StoreError` when
    the backing service cannot be reached (the recorder retries those)."""

    async def append(self, events: Sequence[UsageEvent]) -> int:
        """Store a batch (any users) in at most one round trip; returns how many were new."""
        ...

    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        """The user's events at or after ``since``, oldest first, within the retention window."""
        ...

    async def users(self) -> list[str]:
        """Ids of every user with events inside the retention window."""
        ...

    async def erase(self, user_id: str) -> int:
        """Remove everything the store holds about the user; returns how many events went."""
        ...

    async def aclose(self) -> None: ...


# -- encoding ---------------------------------------------------------------------------------


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(
            f"usage event time {ts.isoformat()} has no time zone; make it aware "
            "(e.g. datetime.now(UTC)) so it can be placed on the user's local day"
        )
    return (ts - _EPOCH) // _MICROSECOND


def _encode(event: UsageEvent) -> tuple[int, str]:
    """(score in epoch ms, member). Keys in a fixed order so one event has one encoding."""
    micros = _micros(event.ts)
    body: dict[str, Any] = {"t": micros, "r": "u" if event.role == "user" else "a"}
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
    if event.exposure:
        body["x"] = sorted(event.exposure)
    if event.request_id:
        body["i"] = event.request_id
    if event.analysed:
        body["a"] = 1
    return micros // 1000, json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _decode(user_id: str, member: str | bytes) -> UsageEvent:
    body = json.loads(member)
    return UsageEvent(
        user_id=user_id,
        ts=_EPOCH + body["t"] * _MICROSECOND,
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


def _retention_seconds(retention_days: float | None) -> int | None:
    if retention_days is None:
        return None
    if isinstance(retention_days, bool) or not retention_days > 0:
        raise ConfigError(
            f"retention_days must be a positive number of days (or None to keep usage "
            f"forever), not {retention_days!r}",
            field="retention_days",
        )
    return max(1, int(retention_days * 86400))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- in memory ----------------------------------------------------------------------------------


class MemoryUsageStore:
    """Usage in a dict in this process: the embedded default (one process; gone on restart).

    Same contract as :class:`RedisUsageStore`, retention included, so tests and small deployments
    behave like production. Safe for one event loop: no method awaits between reads and writes.
    """

    def __init__(self, *, retention_days: float | None = DEFAULT_RETENTION_DAYS) -> None:
        self.retention_s = _retention_seconds(retention_days)
        #: user id -> encoded member -> (score ms, event)
        self._events: dict[str, dict[str, tuple[int, UsageEvent]]] = {}

    def _cutoff_ms(self) -> int | None:
        return None if self.retention_s is None else _now_ms() - self.retention_s * 1000

    async def append(self, events: Sequence[UsageEvent]) -> int:
        encoded = [(event, *_encode(event)) for event in events]  # validate the batch first
        added = 0
        for event, score, member in encoded:
            mine = self._events.setdefault(event.user_id, {})
            if member not in mine:
                mine[member] = (score, event)
                added += 1
        cutoff = self._cutoff_ms()
        if cutoff is not None:
            for user in {event.user_id for event in events}:
                mine = self._events[user]
                for member in [m for m, (score, _) in mine.items() if score < cutoff]:
                    del mine[member]
                if not mine:
                    del self._events[user]
        return added

    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        floor = _floor_ms(since, self._cutoff_ms())
        stored = self._events.get(user_id, {}).values()
        found = sorted((e for score, e in stored if floor is None or score >= floor), key=_order)
        return [e for e in found if since is None or e.ts >= since]

    async def users(self) -> list[str]:
        cutoff = self._cutoff_ms()
        return sorted(
            user
            for user, mine in self._events.items()
            if cutoff is None or any(score >= cutoff for score, _ in mine.values())
        )

    async def erase(self, user_id: str) -> int:
        return len(self._events.pop(user_id, {}))

    async def aclose(self) -> None:
        return None


def _order(event: UsageEvent) -> tuple[datetime, int]:
    return event.ts, 0 if event.role == "user" else 1


def _floor_ms(since: datetime | None, cutoff_ms: int | None) -> int | None:
    floors = [
        f for f in (None if since is None else _micros(since) // 1000, cutoff_ms) if f is not None
    ]
    return max(floors) if floors else None


# -- Redis ------------------------------------------------------------------------------------


class RedisUsageStore:
    """Usage events in Redis (layout in the module docstring); works on Redis Cluster.

    ``client`` is a URL (``redis://host:port/db``) or a ``redis.asyncio`` client you own (a
    ``Redis`` or a ``RedisCluster``); a client made from a URL is closed by :meth:`aclose`.
    Any event loop may call it: calls run on the loop its connections belong to
    (:mod:`persona_mw.stores.loops`).
    ``retention_days`` trims older events on every write and expires a user's usage that long
    after their last write; ``None`` keeps usage forever.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        socket_timeout: float = 2.0,
    ) -> None:
        self.retention_s = _retention_seconds(retention_days)
        self._connect: Callable[[], Any] | None = None
        if isinstance(client, str):
            self._connect = connector(client, socket_timeout)
            client = self._connect()
        self._client: Any = client
        self._home = HomeLoop(self._home_stopped)
        self.prefix = prefix
        #: Deployment-wide: user tag -> last write. Its own slot (see the module docstring).
        self.users_key = f"{prefix}usage:users"

    def _home_stopped(self) -> None:
        """The loop this store ran on has stopped (see :mod:`persona_mw.stores.loops`): its
        connections stay with it; a client made here starts afresh on this loop."""
        if self._connect is not None:
            self._client = self._connect()

    @property
    def client(self) -> Any:
        return self._client

    def events_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage")

    def id_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage:id")

    def _cutoff_ms(self) -> int | None:
        return None if self.retention_s is None else _now_ms() - self.retention_s * 1000

    @on_home_loop
    async def append(self, events: Sequence[UsageEvent]) -> int:
        if not events:
            return 0
        per_user: dict[str, dict[str, int]] = {}
        for event in events:  # encode (and validate) everything before anything is sent
            score, member = _encode(event)
            per_user.setdefault(event.user_id, {})[member] = score
        try:
            try:
                return await self._append(per_user)
            except NoScriptError:  # a fresh or restarted server: load once, send again
                await self._client.script_load(_APPEND)
                return await self._append(per_user)  # appends are idempotent
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "writing usage events") from exc

    async def _append(self, per_user: dict[str, dict[str, int]]) -> int:
        """One pipeline: per user one EVALSHA (all their keys, one slot), then the user list."""
        cutoff = self._cutoff_ms()
        cutoff_arg = "" if cutoff is None else str(cutoff)
        ttl_arg = str(self.retention_s or 0)
        pipe = self._client.pipeline(transaction=False)
        for user, members in per_user.items():
            keys = (self.events_key(user), self.id_key(user), index_key(self.prefix, user))
            flat = [x for member, score in members.items() for x in (score, member)]
            for start in range(0, len(flat), 2 * _MEMBERS_PER_CALL):
                chunk = flat[start : start + 2 * _MEMBERS_PER_CALL]
                # execute_command: redis-py's cluster pipeline blocks the evalsha() helper, not
                # the command (it routes EVALSHA by its keys, all in this user's slot).
                pipe.execute_command(
                    "EVALSHA", _APPEND_SHA, 3, *keys, cutoff_arg, ttl_arg, user, *chunk
                )
        # Score = the user's latest event, only ever raised: users() and retention agree on
        # "active within the window" with the in-memory store.
        pipe.zadd(
            self.users_key, {user_tag(u): max(m.values()) for u, m in per_user.items()}, gt=True
        )
        if cutoff is not None:
            pipe.zremrangebyscore(self.users_key, "-inf", f"({cutoff}")
        results = await pipe.execute()
        return sum(int(added) for added in results[: -2 if cutoff is not None else -1])

    @on_home_loop
    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        floor = _floor_ms(since, self._cutoff_ms())
        try:
            members = await self._client.zrangebyscore(
                self.events_key(user_id), "-inf" if floor is None else floor, "+inf"
            )
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "reading usage events") from exc
        found = sorted((_decode(user_id, m) for m in members), key=_order)
        return [e for e in found if since is None or e.ts >= since]

    @on_home_loop
    async def users(self) -> list[str]:
        cutoff = self._cutoff_ms()
        try:
            tags = await self._client.zrangebyscore(
                self.users_key, "-inf" if cutoff is None else cutoff, "+inf"
            )
            if not tags:
                return []
            pipe = self._client.pipeline(transaction=False)
            for tag in tags:
                pipe.get(f"{self.prefix}{{{_text(tag)}}}:usage:id")
            ids = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "listing users") from exc
        return sorted(_text(i) for i in ids if i is not None)

    @on_home_loop
    async def erase(self, user_id: str) -> int:
        events_key, id_key = self.events_key(user_id), self.id_key(user_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.zcard(events_key)
        pipe.delete(events_key, id_key)
        pipe.srem(index_key(self.prefix, user_id), events_key, id_key)
        pipe.zrem(self.users_key, user_tag(user_id))
        try:
            count, *_ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "erasing a user's usage") from exc
        return int(count)

    @on_home_loop
    async def aclose(self) -> None:
        if self._connect is not None:
            await self._client.aclose()


def open_usage_store(
    url: str | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    retention_days: float | None = DEFAULT_RETENTION_DAYS,
) -> MemoryUsageStore | RedisUsageStore:
    """A usage store for ``url``: ``redis://``, ``rediss://``, ``unix://`` -> Redis; empty ->
    in memory (the same rule as :func:`persona_mw.stores.open_store`)."""
    if not url:
        return MemoryUsageStore(retention_days=retention_days)
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisUsageStore(url, prefix=prefix, retention_days=retention_days)
    raise ConfigError(
        f"unsupported usage store URL {url!r}; use redis://host:port/db or leave it empty for "
        "the embedded in-memory store",
        field="usage.url",
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _store_error(exc: Exception, doing: str) -> StoreError:
    return StoreError(
        f"Redis failed {doing} ({type(exc).__name__}: {exc}); check the usage store URL and "
        "that the server is up"
    )
