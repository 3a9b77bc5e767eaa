"""Where the ladder's due-state lives: per user, the last time each action fired.

The ladder is pure; this is its memory between requests, so a reminder fires once per due time
even when requests land on different processes. Redis keys follow the stores' scheme
(``{prefix}{u:<digest>}:signals:actions``, one hash per user, same Cluster slot as the rest of the
user's keys) and are registered in the user's key index, so erasing the user removes them.

Also here: deployment-wide counters for the annual, non-identifying report (crisis referrals per
year, actions per year), which carry no user at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from persona_mw.errors import StoreError
from persona_mw.stores.keys import DEFAULT_PREFIX, index_key, user_key
from persona_mw.stores.loops import HomeLoop, connector, on_home_loop
from persona_mw.types import ActionStateStore

__all__ = [
    "ActionStateStore",
    "MemoryActionStateStore",
    "RedisActionStateStore",
]

_SUFFIX = "signals:actions"


class MemoryActionStateStore:
    """In-process due-state (the embedded default; one process only)."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, datetime]] = {}
        self._counters: dict[str, dict[str, int]] = {}

    async def get(self, user_id: str) -> dict[str, datetime]:
        return dict(self._states.get(user_id, {}))

    async def set(self, user_id: str, state: Mapping[str, datetime]) -> None:
        self._states[user_id] = dict(state)

    async def delete(self, user_id: str) -> bool:
        return self._states.pop(user_id, None) is not None

    async def incr(self, counter: str, period: str, amount: int = 1) -> None:
        bucket = self._counters.setdefault(period, {})
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

    def _home_stopped(self) -> None:
        """The loop this store ran on has stopped (see :mod:`persona_mw.stores.loops`): its
        connections stay with it; a client made here starts afresh on this loop."""
        if self._connect is not None:
            self._client = self._connect()

    def key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, _SUFFIX)

    @on_home_loop
    async def get(self, user_id: str) -> dict[str, datetime]:
        try:
            raw = await self._client.hgetall(self.key(user_id))
        except Exception as exc:
            raise _store_error(exc, "reading") from exc
        return {_text(k): datetime.fromisoformat(_text(v)) for k, v in raw.items()}

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
    async def delete(self, user_id: str) -> bool:
        try:
            removed = await self._client.delete(self.key(user_id))
            await self._client.srem(index_key(self.prefix, user_id), self.key(user_id))
        except Exception as exc:
            raise _store_error(exc, "erasing") from exc
        return bool(removed)

    def _counter_key(self, period: str) -> str:
        return f"{self.prefix}signals:aggregate:{period}"

    @on_home_loop
    async def incr(self, counter: str, period: str, amount: int = 1) -> None:
        try:
            await self._client.hincrby(self._counter_key(period), counter, amount)
        except Exception as exc:
            raise _store_error(exc, "counting") from exc

    @on_home_loop
    async def counters(self, period: str) -> dict[str, int]:
        try:
            raw = await self._client.hgetall(self._counter_key(period))
        except Exception as exc:
            raise _store_error(exc, "reading counters") from exc
        return {_text(k): int(v) for k, v in raw.items()}

    @on_home_loop
    async def aclose(self) -> None:
        if self._connect is not None:
            await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _store_error(exc: Exception, doing: str) -> StoreError:
    return StoreError(
        f"Redis failed {doing} the signals state ({type(exc).__name__}: {exc}); "
        "check the usage store URL and that the server is up"
    )
