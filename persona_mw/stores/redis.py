"""Profiles in Redis (redis.asyncio), with optimistic concurrency and cross-process invalidation.

Layout (see :mod:`persona_mw.stores.keys`): ``{prefix}{u:<digest>}:profile`` is a hash with the
profile JSON (``d``) and its version (``v``). Writes and deletes run as Lua scripts: the version
check, the write, the key-index update and the invalidation message happen atomically in one
round trip. Every write publishes the user's tag on ``{prefix}invalidate`` so other processes'
caches drop their copy (:class:`persona_mw.stores.cache.CachedProfileStore`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from ..errors import ProfileConflictError, StoreError
from ..profile import Profile, parse_profile
from ..types import Lookup
from .keys import DEFAULT_PREFIX, index_key, user_key, user_tag
from .loops import HomeLoop, connector, on_home_loop
from .retain import kept_defaults

__all__ = ["RedisProfileStore"]

# KEYS: profile, index. ARGV: expected version (-1: any), JSON, channel, tag.
_PUT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v')) or 0
local expected = tonumber(ARGV[1])
if expected >= 0 and current ~= expected then return {0, current} end
local version = current + 1
redis.call('HSET', KEYS[1], 'v', version, 'd', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {1, version}
"""

# KEYS: index, profile. ARGV: channel, tag, JSON {field: default} of fields to keep.
# Deletes every key the user's index lists (same slot). A kept field whose stored value is not
# its default survives in a fresh profile (version still increasing), all in one step: no other
# write can come between reading what to keep and writing it back.
_DELETE = """
local keep = cjson.decode(ARGV[3])
local kept = nil
local stored = redis.call('HGET', KEYS[2], 'd')
if stored and next(keep) ~= nil then
  local ok, profile = pcall(cjson.decode, stored)
  if ok and type(profile) == 'table' then
    for field, default in pairs(keep) do
      local value = profile[field]
      -- a list is kept only when not empty (tables compare by reference; every list field's
      -- default is empty, and cjson would write an empty one back as an object)
      local set = type(value) ~= 'table' or next(value) ~= nil
      if value ~= nil and value ~= cjson.null and value ~= default and set then
        kept = kept or {schema_version = 1, user_id = profile['user_id']}
        kept[field] = value
      end
    end
  end
end
local version = tonumber(redis.call('HGET', KEYS[2], 'v')) or 0
local keys = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, key in ipairs(keys) do removed = removed + redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
if kept then
  redis.call('HSET', KEYS[2], 'v', version + 1, 'd', cjson.encode(kept))
  redis.call('SADD', KEYS[1], KEYS[2])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return removed
"""


class RedisProfileStore:
    """A :class:`~persona_mw.types.ProfileStore` on Redis.

    ``client`` may be a URL (``redis://...``) or a ``redis.asyncio.Redis`` you own; a client
    made from a URL is closed by :meth:`aclose`. Any event loop may call it: calls run on the
    loop its connections belong to (:mod:`persona_mw.stores.loops`).
    """

    remote = True

    def __init__(
        self,
        client: str | aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 2.0,
    ) -> None:
        self._connect: Callable[[], aioredis.Redis] | None = None
        if isinstance(client, str):
            self._connect = connector(client, socket_timeout)
            client = self._connect()
        self.prefix = prefix
        self.channel = f"{prefix}invalidate"
        self._feeds: set[Any] = set()
        self._home = HomeLoop(self._home_stopped)
        self._use(client)

    def _use(self, client: aioredis.Redis) -> None:
        self._client = client
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)

    def _home_stopped(self) -> None:
        """The loop this store ran on has stopped (see :mod:`persona_mw.stores.loops`): its
        feeds and connections stay with it; a client made here starts afresh on this loop."""
        self._feeds.clear()
        if self._connect is not None:
            self._use(self._connect())

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "profile")

    @on_home_loop
    async def get(self, user_id: str) -> Profile | None:
        try:
            data, version = await self._client.hmget(self.key(user_id), ["d", "v"])
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis unreachable reading a profile: {exc}") from exc
        if data is None:
            return None
        return parse_profile(data, version=int(version or 0))

    @on_home_loop
    async def put(self, profile: Profile, *, expected_version: int | None = None) -> Profile:
        body = profile.model_dump(mode="json", exclude={"version"})
        keys = [self.key(profile.user_id), index_key(self.prefix, profile.user_id)]
        args: list[Any] = [
            -1 if expected_version is None else expected_version,
            json.dumps(body, separators=(",", ":")),
            self.channel,
            user_tag(profile.user_id),
        ]
        try:
            ok, version = await self._put(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis unreachable writing a profile: {exc}") from exc
        if not ok:
            raise ProfileConflictError(
                user_tag(profile.user_id), expected_version or 0, int(version)
            )
        return profile.model_copy(update={"version": int(version)})

    @on_home_loop
    async def delete(self, user_id: str, *, keep: Collection[str] = ()) -> bool:
        keys = [index_key(self.prefix, user_id), self.key(user_id)]
        args = [self.channel, user_tag(user_id), json.dumps(kept_defaults(keep))]
        try:
            removed = await self._delete(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis unreachable erasing a user: {exc}") from exc
        return bool(removed)

    async def invalidations(self) -> AsyncIterator[str]:
        """Yield ``""`` once subscribed, then the tag of every user whose profile changes, in any
        process, until cancelled.

        Raises StoreError when the subscription breaks; the caller reconnects and must assume it
        missed messages in between.
        """
        pubsub = None
        try:
            initialize = getattr(self._client, "initialize", None)
            if initialize is not None:  # a fresh RedisCluster client has no slot map yet
                await initialize()
            pubsub = self._client.pubsub()
            self._feeds.add(pubsub)
            await pubsub.subscribe(self.channel)
            # listen() blocks without a timeout wrapper: get_message(timeout=...) can swallow
            # a cancellation that lands inside its timeout and then wait on.
            async for message in pubsub.listen():
                if message.get("type") == "subscribe":
                    yield ""
                elif message.get("type") == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)
        except (RedisError, RedisClusterException, OSError, KeyError) as exc:
            raise StoreError(f"profile invalidation channel lost: {exc!r}") from exc
        finally:
            if pubsub is not None:
                self._feeds.discard(pubsub)
                await _close_pubsub(pubsub)

    async def lookup(self, user_id: str) -> Lookup:
        return Lookup(await self.get(user_id), "store")

    @on_home_loop
    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    @on_home_loop
    async def aclose(self) -> None:
        # A feed whose cancellation redis-py swallowed (it can, mid-connect) is still reading:
        # cut its connection so it ends.
        for pubsub in list(self._feeds):
            connection = pubsub.connection
            if connection is not None:
                await connection.disconnect(nowait=True)
        if self._connect is not None:
            await self._client.aclose()


async def _close_pubsub(pubsub: Any) -> None:
    """Close a pub/sub connection, also when our task is being cancelled mid-read: redis-py's
    ``aclose`` waits for a lock that a cancelled read can leave waiting, so bound it."""
    try:
        await asyncio.wait_for(pubsub.aclose(), timeout=0.5)
    except (TimeoutError, RedisError, OSError):
        connection = pubsub.connection
        if connection is not None:
            await connection.disconnect(nowait=True)
