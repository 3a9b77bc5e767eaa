"""Where the ladder's due-state lives: per user, the last time each action fired.

The ladder is pure; this is its memory between requests, so a reminder fires once per due time
even when requests land on different processes. Taking a due action is a *claim*
(:meth:`ActionStateStore.claim`, :func:`claim_due`): a compare-and-set of the action's time
against what the request read, atomic in the store (a Lua script in Redis, a lock in memory), so
of fifty requests of one user in flight that all read "not yet told today", exactly one shows
the day's disclosure. Redis keys follow the stores' scheme (``{prefix}{u:<digest>}:signals:
actions``, one hash per user, same Cluster slot as the rest of the user's keys) and are
registered in the user's key index, so erasing the user removes them.

Also here: deployment-wide counters for the annual, non-identifying reports (crisis referrals,
actions, per law and month), which carry no user at all, and, per user, in which period they
were last counted as "in scope" of each law (:meth:`ActionStateStore.first_seen`, in the user's
own keys, erased with them), so the reports count distinct users without storing who.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from persona_mw.errors import StoreError
from persona_mw.stores.keys import DEFAULT_PREFIX, index_key, same_slot_key, user_key
from persona_mw.stores.loops import HomeLoop, connector, on_home_loop
from persona_mw.types import ActionStateStore, LadderResult

from .ladder import STATE_KINDS
from .usage_redis import redis_text, store_error

__all__ = [
    "ActionStateStore",
    "MemoryActionStateStore",
    "RedisActionStateStore",
    "claim_due",
]

_SUFFIX = "signals:actions"
_SCOPE_SUFFIX = "signals:scope"
#: A user's "counted in scope" marks outlive the month they are for (one write refreshes them).
_SCOPE_TTL_S = 40 * 24 * 3600

#: A Redis client retries a command whose reply it lost (a timeout, a dropped connection, or
#: redis-py's RedisCluster closing every connection after a burst of MOVED), and the server may
#: have run the first one. So each write carries its call's token, stored after the value
#: ("<value> <token>"), and a script that finds its own token answers as the first run did:
#: without it, a retried claim found the action taken (by itself) and its claimant lost it.
_VALUE = """
local function value(stored)
  return string.match(stored, '^(.*) [^ ]*$') or stored
end
"""

#: KEYS: the user's state hash, their key index; ARGV: ttl, the call's token, then (kind,
#: expected, new) triples, expected "" for "never taken". Sets each kind whose stored time is
#: still the expected one.
_CLAIM = (
    _VALUE
    + """
local claimed = {}
for i = 3, #ARGV, 3 do
  local stored = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  local mine = ARGV[i + 2] .. ' ' .. ARGV[2]
  if stored == mine then
    claimed[#claimed + 1] = ARGV[i]
  elseif value(stored) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], mine)
    claimed[#claimed + 1] = ARGV[i]
  end
end
if #claimed > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], KEYS[1])
end
return claimed
"""
)

#: KEYS: the user's scope hash, their key index; ARGV: ttl, the call's token, then (scope,
#: period) pairs. Sets each scope whose stored period differs and returns those: the user's
#: first call there this period.
_FIRST_SEEN = (
    _VALUE
    + """
local fresh = {}
for i = 3, #ARGV, 2 do
  local stored = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  local mine = ARGV[i + 1] .. ' ' .. ARGV[2]
  if stored == mine then
    fresh[#fresh + 1] = ARGV[i]
  elseif value(stored) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], mine)
    fresh[#fresh + 1] = ARGV[i]
  end
end
if #fresh > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], KEYS[1])
end
return fresh
"""
)


#: KEYS: a counter hash, the call's token key (same slot); ARGV: the token's TTL, then (counter,
#: amount) pairs. Adds them unless the token is already there: a client that lost the reply
#: and sends the script again counts nothing twice.
_ADD_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
#: How long a call's token is kept: longer than any client retries a lost reply.
_ONCE_TTL_S = 600


class MemoryActionStateStore:
    """In-process due-state (the embedded default; one process only)."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, datetime]] = {}
        self._scopes: dict[str, dict[str, str]] = {}
        self._counters: dict[str, dict[str, int]] = {}
        #: Claims compare and set as one step, whichever thread or loop the calls come from.
        self._lock = threading.Lock()

    async def get(self, user_id: str) -> dict[str, datetime]:
        return dict(self._states.get(user_id, {}))

    async def set(self, user_id: str, state: Mapping[str, datetime]) -> None:
        with self._lock:
            self._states[user_id] = dict(state)

    async def claim(
        self,
        user_id: str,
        expected: Mapping[str, datetime | None],
        taken: Mapping[str, datetime],
    ) -> frozenset[str]:
        with self._lock:
            stored = self._states.setdefault(user_id, {})
            claimed = frozenset(k for k in taken if stored.get(k) == expected.get(k))
            stored.update((kind, taken[kind]) for kind in claimed)
        return claimed

    async def first_seen(self, user_id: str, periods: Mapping[str, str]) -> frozenset[str]:
        with self._lock:
            marks = self._scopes.setdefault(user_id, {})
            fresh = frozenset(k for k, period in periods.items() if marks.get(k) != period)
            marks.update((scope, periods[scope]) for scope in fresh)
        return fresh

    async def delete(self, user_id: str) -> bool:
        with self._lock:
            self._scopes.pop(user_id, None)
            return self._states.pop(user_id, None) is not None

    async def incr(self, counter: str, period: str, amount: int = 1) -> None:
        await self.add_counts({period: {counter: amount}}, token="")

    async def add_counts(self, counts: Mapping[str, Mapping[str, int]], *, token: str) -> None:
        # nothing is sent twice in process: the token is for stores a client retries against
        with self._lock:
            for period, add in counts.items():
                bucket = self._counters.setdefault(period, {})
                for counter, amount in add.items():
                    bucket[counter] = bucket.get(counter, 0) + amount

    async def counters(self, period: str) -> dict[str, int]:
        return dict(self._counters.get(period, {}))

    async def aclose(self) -> None:
        return None


class RedisActionStateStore:
    """Due-state in Redis. ``client`` is a URL or a ``redis.asyncio.Redis`` you own; ``ttl_s``
    expires a user's state after they stop using the service (default 60 days). Any event loop
    may call it: calls run on the loop its connections belong to (:mod:`persona_mw.stores.loops`).
    """

    def __init__(
        self, client: Any, *, prefix: str = DEFAULT_PREFIX, ttl_s: int = 60 * 24 * 3600
    ) -> None:
        self._connect: Callable[[], Any] | None = None
        if isinstance(client, str):
            self._connect = connector(client)
            client = self._connect()
        self._client: Any = client
        self._home = HomeLoop(self._home_stopped)
        self.prefix = prefix
        self.ttl_s = ttl_s
        same_slot_key(self._counter_key("statutory:2027"), "")  # a prefix Cluster can keep

    def _home_stopped(self) -> None:
        """The loop this store ran on has stopped (see :mod:`persona_mw.stores.loops`): its
        connections stay with it; a client made here starts afresh on this loop."""
        if self._connect is not None:
            self._client = self._connect()

    def key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, _SUFFIX)

    def scope_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, _SCOPE_SUFFIX)

    @on_home_loop
    async def get(self, user_id: str) -> dict[str, datetime]:
        try:
            raw = await self._client.hgetall(self.key(user_id))
        except Exception as exc:
            raise _store_error(exc, "reading") from exc
        # a claimed time carries its claim's token after a space (see _VALUE); a set one does not
        return {
            redis_text(k): datetime.fromisoformat(redis_text(v).split(" ")[0])
            for k, v in raw.items()
        }

    @on_home_loop
    async def set(self, user_id: str, state: Mapping[str, datetime]) -> None:
        if not state:
            return
        key = self.key(user_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={k: v.isoformat() for k, v in state.items()})
                pipe.expire(key, self.ttl_s)
                pipe.sadd(index_key(self.prefix, user_id), key)
                await pipe.execute()
        except Exception as exc:
            raise _store_error(exc, "writing") from exc

    @on_home_loop
    async def claim(
        self,
        user_id: str,
        expected: Mapping[str, datetime | None],
        taken: Mapping[str, datetime],
    ) -> frozenset[str]:
        if not taken:
            return frozenset()
        args: list[str | int] = [self.ttl_s, uuid.uuid4().hex]
        for kind, at in taken.items():
            before = expected.get(kind)
            args += [kind, before.isoformat() if before is not None else "", at.isoformat()]
        keys = (self.key(user_id), index_key(self.prefix, user_id))
        try:
            claimed = await self._client.eval(_CLAIM, len(keys), *keys, *args)
        except Exception as exc:
            raise _store_error(exc, "claiming a due action in") from exc
        return frozenset(redis_text(kind) for kind in claimed)

    @on_home_loop
    async def first_seen(self, user_id: str, periods: Mapping[str, str]) -> frozenset[str]:
        if not periods:
            return frozenset()
        args: list[str | int] = [_SCOPE_TTL_S, uuid.uuid4().hex]
        for scope, period in periods.items():
            args += [scope, period]
        keys = (self.scope_key(user_id), index_key(self.prefix, user_id))
        try:
            fresh = await self._client.eval(_FIRST_SEEN, len(keys), *keys, *args)
        except Exception as exc:
            raise _store_error(exc, "marking the user in scope in") from exc
        return frozenset(redis_text(scope) for scope in fresh)

    @on_home_loop
    async def delete(self, user_id: str) -> bool:
        keys = (self.key(user_id), self.scope_key(user_id))
        try:
            removed = await self._client.delete(keys[0])
            await self._client.delete(keys[1])
            await self._client.srem(index_key(self.prefix, user_id), *keys)
        except Exception as exc:
            raise _store_error(exc, "erasing") from exc
        return bool(removed)

    def _counter_key(self, period: str) -> str:
        return f"{self.prefix}signals:aggregate:{period}"

    async def incr(self, counter: str, period: str, amount: int = 1) -> None:
        await self.add_counts({period: {counter: amount}}, token=uuid.uuid4().hex)

    @on_home_loop
    async def add_counts(self, counts: Mapping[str, Mapping[str, int]], *, token: str) -> None:
        """One script per period (each period's hash has its own Cluster slot), pipelined: one
        round trip for the call."""
        calls = []
        for period, add in counts.items():
            args = [a for counter, n in add.items() if n for a in (counter, n)]
            if args:
                key = self._counter_key(period)
                calls.append((key, same_slot_key(key, f":once:{token}"), args))
        if not calls:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, once, args in calls:
                    pipe.eval(_ADD_ONCE, 2, key, once, _ONCE_TTL_S, *args)
                await pipe.execute()
        except Exception as exc:
            raise _store_error(exc, "counting") from exc

    @on_home_loop
    async def counters(self, period: str) -> dict[str, int]:
        try:
            raw = await self._client.hgetall(self._counter_key(period))
        except Exception as exc:
            raise _store_error(exc, "reading counters") from exc
        return {redis_text(k): int(v) for k, v in raw.items()}

    @on_home_loop
    async def aclose(self) -> None:
        if self._connect is not None:
            await self._client.aclose()


async def claim_due(
    store: ActionStateStore,
    user_id: str,
    read: Mapping[str, datetime],
    result: LadderResult,
) -> LadderResult:
    """Take the ladder's due actions against the store: ``read`` is the state the ladder ran on.
    An action another request claimed first (it read the same state, in flight at once) is not
    this request's: a notice is dropped, a state (still in force) is no longer ``new``."""
    taken = {kind: at for kind, at in result.state.items() if read.get(kind) != at}
    if not taken:
        return result
    claimed = await store.claim(user_id, {kind: read.get(kind) for kind in taken}, taken)
    lost = taken.keys() - claimed
    if not lost:
        return result
    actions = tuple(
        replace(a, new=False) if a.kind in lost else a
        for a in result.actions
        if a.kind not in lost or a.kind in STATE_KINDS
    )
    state = {kind: at for kind, at in result.state.items() if kind not in lost}
    state.update((kind, read[kind]) for kind in lost if kind in read)
    return replace(result, actions=actions, state=state)


def _store_error(exc: Exception, doing: str) -> StoreError:
    return store_error(exc, f"{doing} the signals state")
