"""The read cache: hits stay in-process, writes anywhere evict within 100 ms, outages fall back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from persona_mw import (
    CachedProfileStore,
    Middleware,
    Profile,
    RedisProfileStore,
    Settings,
    StoreError,
)
from persona_mw.stores import user_key
from persona_mw.testing import capture_logs


async def _wait_feed(cache: CachedProfileStore) -> None:
    await cache.start()
    for _ in range(200):
        if cache.feed_up:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("invalidation feed did not come up")


def _hmget_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


@pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")), reason="counts server-wide commands: needs its own server"
)
async def test_cache_hit_needs_no_round_trip(redis_url: str, key_prefix: str) -> None:
    cache = CachedProfileStore(RedisProfileStore(redis_url, prefix=key_prefix))
    try:
        await RedisProfileStore(redis_url, prefix=key_prefix).put(Profile(user_id="ada"))
        await _wait_feed(cache)
        assert (await cache.lookup("ada")).source == "store"
        before = _hmget_calls(redis_url)
        for _ in range(100):
            assert (await cache.lookup("ada")).source == "cache"
        assert _hmget_calls(redis_url) == before
    finally:
        await cache.aclose()


async def test_write_in_same_process_is_seen_at_once(redis_url: str, key_prefix: str) -> None:
    cache = CachedProfileStore(RedisProfileStore(redis_url, prefix=key_prefix))
    try:
        await _wait_feed(cache)
        await cache.put(Profile(user_id="ada", own_rules="one"))
        assert (await cache.get("ada")).own_rules == "one"  # type: ignore[union-attr]
        await cache.put(Profile(user_id="ada", own_rules="two"))
        assert (await cache.get("ada")).own_rules == "two"  # type: ignore[union-attr]
    finally:
        await cache.aclose()


READER = textwrap.dedent(
    """
    import asyncio, sys, time
    from persona_mw import CachedProfileStore, RedisProfileStore

    async def main(url, prefix):
        cache = CachedProfileStore(RedisProfileStore(url, prefix=prefix))
        await cache.start()
        while not cache.feed_up:
            await asyncio.sleep(0.005)
        found = await cache.lookup("ada")
        print("ready", found.profile.own_rules, flush=True)
        while True:
            found = await cache.lookup("ada")
            if found.profile.own_rules == "updated":
                print("seen", time.time(), found.source, flush=True)
                break
            await asyncio.sleep(0.001)
        await cache.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_update_in_another_process_is_seen_within_100ms(
    redis_url: str, key_prefix: str
) -> None:
    """Two real processes: the reader caches the profile; the writer updates it; the reader must
    see the new version within 100 ms (pub/sub invalidation, not the 60 s TTL)."""
    writer = RedisProfileStore(redis_url, prefix=key_prefix)
    await writer.put(Profile(user_id="ada", own_rules="original"))
    proc = subprocess.Popen(  # noqa: ASYNC220 - a second real process is the point of the test
        [sys.executable, "-c", READER, redis_url, key_prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = await asyncio.to_thread(proc.stdout.readline)
        assert ready.split() == ["ready", "original"]
        await asyncio.sleep(0.2)  # the reader is now serving from its cache
        written_at = time.time()
        await writer.put(Profile(user_id="ada", own_rules="updated"))
        seen = (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 5)).split()
        assert seen[0] == "seen" and seen[2] == "store"
        assert float(seen[1]) - written_at < 0.1
    finally:
        proc.kill()
        proc.wait()
        await writer.aclose()


async def test_store_down_serves_stale_copy_then_default(key_prefix: str) -> None:
    """Redis unreachable: a cached copy is served as "fallback"; an unknown user gets the
    default profile; a warning is logged; nothing raises."""
    from tests.conftest import RedisServer

    server = RedisServer()
    inner = RedisProfileStore(server.url, prefix=key_prefix, socket_timeout=0.5)
    mw = Middleware(store=inner, settings=Settings(profile_cache_ttl_s=60))
    try:
        await inner.put(Profile(user_id="ada", own_rules="cached"))
        assert isinstance(mw.store, CachedProfileStore)
        await _wait_feed(mw.store)
        profile, source = await mw.load_profile("ada")
        assert (profile.own_rules, source) == ("cached", "store")
        server.stop()
        for _ in range(300):  # the feed notices the lost connection
            if not mw.store.feed_up:
                break
            await asyncio.sleep(0.01)
        with capture_logs() as logs:
            profile, source = await mw.load_profile("ada")
            assert (profile.own_rules, source) == ("cached", "fallback")
            other, source = await mw.load_profile("bob")
            assert (other, source) == (Profile.default("bob"), "fallback")
        assert any(e["event"] == "profile.store_unavailable" for e in logs)
    finally:
        server.stop()
        await mw.aclose()


async def test_fail_closed_raises_store_error(key_prefix: str) -> None:
    mw = Middleware(
        store=RedisProfileStore("redis://127.0.0.1:1/0", prefix=key_prefix, socket_timeout=0.2),
        settings=Settings(on_store_error="fail_closed"),
    )
    try:
        with pytest.raises(StoreError, match="unreachable"):
            await mw.load_profile("ada")
    finally:
        await mw.aclose()


async def test_malformed_stored_profile_gives_default(redis_url: str, key_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.hset(
        user_key(key_prefix, "grace", "profile"),
        mapping={"d": '{"user_id": "grace", "style": 7}', "v": 3},
    )
    await client.aclose()
    mw = Middleware(store=RedisProfileStore(redis_url, prefix=key_prefix))
    try:
        with capture_logs() as logs:
            profile, source = await mw.load_profile("grace")
        assert (profile, source) == (Profile.default("grace"), "default")
        errors = [e for e in logs if e["event"] == "profile.invalid_stored"]
        assert errors and "style" in errors[0]["error"]
        assert "grace" not in str(errors[0])  # letters no hex digest can hold by chance
    finally:
        await mw.aclose()
