"""Redis stores used on one event loop, then read, erased and closed from another.

A sync app's calls through LangChain run the middleware on a private loop in another thread; the
app then erases a user or closes the middleware from its own loop (``asyncio.run(mw.aclose())``).
redis-py's connections belong to the loop they were made on, so the stores hand such calls to
that loop while it runs, and reconnect on the caller's loop once it has stopped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import redis.asyncio
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

from persona_mw import (
    CachedProfileStore,
    Config,
    Profile,
    RedisProfileStore,
    StoreError,
    build_middleware,
)
from persona_mw.signals import ErasedUsage, RedisUsageStore, UsageEvent, UsageRecorder
from persona_mw.signals.action_state import RedisActionStateStore
from persona_mw.stores import loops
from tests.conftest import loop_in_thread

pytestmark = pytest.mark.redis

T = TypeVar("T")


def run_there(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=5)


async def stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop the loop (not close it: its tasks stay pending, and it could run again)."""
    loop.call_soon_threadsafe(loop.stop)
    await asyncio.to_thread(thread.join, 5)
    assert not loop.is_running()


async def subscribers(client: redis.asyncio.Redis, channel: str) -> int:
    ((_, count),) = await client.pubsub_numsub(channel)
    return int(count)


async def feed_up(cache: CachedProfileStore) -> None:
    await cache.start()
    for _ in range(500):
        if cache.feed_up:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("invalidation feed did not come up")


async def test_cached_profile_store_erases_and_closes_from_another_loop(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """The cache's invalidation listener and the store's connections live on the loop in the
    other thread; reading, erasing and closing from this loop run there: no "attached to a
    different loop" error, and the close really ends the listener and its subscription."""
    store = RedisProfileStore(redis_url, prefix=key_prefix)
    cache = CachedProfileStore(store)

    async def use() -> None:
        await feed_up(cache)
        await cache.put(Profile(user_id="ada", own_rules="be brief"))
        assert (await cache.lookup("ada")).source == "store"

    with loop_in_thread() as (other, _):
        run_there(other, use())
        listener = cache.listener
        assert listener is not None and listener.get_loop() is other
        assert await subscribers(redis_client, store.channel) == 1
        found = await cache.get("ada")
        assert found is not None and found.own_rules == "be brief"
        assert await cache.delete("ada")
        assert await cache.get("ada") is None
        await cache.aclose()
        assert listener.done()
        assert await subscribers(redis_client, store.channel) == 0
        assert other.is_running()  # closed there, not by stopping it


async def test_profile_store_reconnects_after_its_loop_stopped(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """The loop the connections (and the cache's listener) belong to has stopped: nothing can
    run there, so this loop takes over with fresh connections, and closing does not wait for a
    listener that will never run again."""
    store = RedisProfileStore(redis_url, prefix=key_prefix)
    cache = CachedProfileStore(store)

    async def use() -> None:
        await feed_up(cache)
        await cache.put(Profile(user_id="ada", own_rules="be brief"))

    with loop_in_thread() as (other, thread):
        run_there(other, use())
        listener = cache.listener
        assert listener is not None
        await stop(other, thread)
        found = await store.get("ada")
        assert found is not None and found.own_rules == "be brief"
        assert await cache.delete("ada")
        assert await redis_client.exists(store.key("ada")) == 0
        await asyncio.wait_for(cache.aclose(), 5)
        assert not listener.done()
        # Told to stop should its loop ever run again: it does, and ends its subscription.
        await asyncio.to_thread(other.run_until_complete, asyncio.wait({listener}, timeout=5))
        assert listener.cancelled()
        assert await subscribers(redis_client, store.channel) == 0


async def test_cache_does_not_serve_stale_profiles_once_its_listener_loop_stopped(
    redis_url: str, key_prefix: str
) -> None:
    """The listener (and its invalidations) stopped with its loop: the cache forgets what it
    held and listens again here, so a change made elsewhere is seen."""
    store = RedisProfileStore(redis_url, prefix=key_prefix)
    cache = CachedProfileStore(store)
    writer = RedisProfileStore(redis_url, prefix=key_prefix)  # another instance
    await writer.put(Profile(user_id="u", timezone="Europe/Paris"))

    async def use() -> None:
        await feed_up(cache)
        assert (await cache.lookup("u")).source == "store"
        assert (await cache.lookup("u")).source == "cache"

    with loop_in_thread() as (other, thread):
        run_there(other, use())
        await stop(other, thread)
        stranded = cache.listener
        assert stranded is not None
        first = await cache.lookup("u")
        assert first.source == "store"  # not the old loop's cached copy
        await feed_up(cache)
        await cache.lookup("u")
        assert (await cache.lookup("u")).source == "cache"  # cached again, under the new feed
        current = await writer.get("u")
        assert current is not None
        await writer.put(current.model_copy(update={"timezone": "Asia/Tokyo"}))
        for _ in range(200):
            found = await cache.lookup("u")
            if found.profile is not None and found.profile.timezone == "Asia/Tokyo":
                break
            await asyncio.sleep(0.01)
        assert found.profile is not None and found.profile.timezone == "Asia/Tokyo"
        await cache.aclose()
        await writer.aclose()
        # The stranded listener was told to stop should its loop run again: it does.
        await asyncio.to_thread(other.run_until_complete, asyncio.wait({stranded}, timeout=5))
        assert stranded.cancelled()


@pytest.mark.parametrize("then", ["running", "stopped"])
async def test_action_state_store_erases_and_closes_from_another_loop(
    redis_url: str, key_prefix: str, then: str
) -> None:
    """The ladder's due-state and the report counters, written on the other loop, then read,
    erased and closed from this one, while that loop runs or after it stopped."""
    store = RedisActionStateStore(redis_url, prefix=key_prefix)
    fired = {"break_reminder": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    with loop_in_thread() as (other, thread):
        run_there(other, store.set("ada", fired))
        run_there(other, store.incr("crisis_referrals", "2026"))
        if then == "stopped":
            await stop(other, thread)
        assert await store.get("ada") == fired
        assert await store.counters("2026") == {"crisis_referrals": 1}
        assert await store.delete("ada")
        assert await store.get("ada") == {}
        await store.aclose()


@pytest.mark.parametrize("then", ["running", "stopped"])
async def test_usage_store_reads_erases_and_closes_from_another_loop(
    redis_url: str, key_prefix: str, then: str
) -> None:
    """Usage written on the other loop (the recorder's writer on the sync bridge's loop), then
    read, erased and closed from this one, while that loop runs or after it stopped."""
    store = RedisUsageStore(redis_url, prefix=key_prefix)
    events = [UsageEvent(user_id="ada", ts=datetime.now(UTC), role="user", request_id="r1")]
    with loop_in_thread() as (other, thread):
        assert run_there(other, store.append(events)) == 1
        if then == "stopped":
            await stop(other, thread)
        assert await store.events("ada") == events
        assert await store.users() == ["ada"]
        assert (await store.erase("ada")).events == 1
        assert await store.events("ada") == []
        await store.aclose()


async def test_a_call_its_blocked_home_loop_waits_for_fails_clearly(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync call made from async code after async calls (in a notebook: ``await
    chat.ainvoke()``, then ``chat.invoke()``): the store's home loop is blocked waiting for the
    call, which runs on the sync bridge's loop. Handing the store's work home would wait
    forever; it fails with a StoreError that says why instead, and home works on afterwards."""
    monkeypatch.setattr(loops, "START_TIMEOUT_S", 0.3)
    store = RedisUsageStore(redis_url, prefix=key_prefix)
    with loop_in_thread() as (home, _), loop_in_thread() as (bridge, _):
        assert run_there(home, store.users()) == []

        async def sync_call_from_async_code() -> ErasedUsage:
            # Blocks home's thread until the call on the bridge returns, as run_sync does.
            return asyncio.run_coroutine_threadsafe(store.erase("ada"), bridge).result(timeout=5)

        with pytest.raises(StoreError, match="blocked, most likely waiting for this very call"):
            run_there(home, sync_call_from_async_code())
        assert run_there(home, store.erase("ada")).events == 0
        run_there(home, store.aclose())


async def test_middleware_used_on_another_loop_erases_and_closes_from_this_one(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """The deployed wiring on Redis (cached profiles, usage, the ladder's due-state), with every
    call made on the loop in the other thread, as ``PersonaChatModel.invoke`` makes them; then
    the app erases the user and shuts down from its own loop (``asyncio.run(mw.aclose())``)."""
    config = Config.model_validate(
        {
            "settings": {"hash_secret": "test-secret"},
            "store": {"url": redis_url, "prefix": key_prefix},
        }
    )
    mw = build_middleware(config)
    (recorder,) = [s for s in mw.finish_stages if isinstance(s, UsageRecorder)]
    messages = [{"role": "user", "content": "hello"}]

    async def calls() -> None:
        await mw.store.put(Profile(user_id="ada"))
        for text in ("one", "two"):
            await mw.acompletion(
                user="ada", model="gpt-4o-mini", messages=messages, mock_response=text
            )

    with loop_in_thread() as (other, _):
        run_there(other, calls())
        assert recorder.produced == 4
        erased = await mw.erase_user("ada")
        assert erased["profile"] is True
        assert (recorder.stored, recorder.dropped, recorder.pending) == (4, 0, 0)
        assert await redis_client.keys(f"{key_prefix}{{u:*") == []
        bo = mw.acompletion(user="bo", model="gpt-4o-mini", messages=messages, mock_response="hi")
        run_there(other, bo)
        await mw.aclose()
        assert (recorder.produced, recorder.stored, recorder.dropped) == (6, 6, 0)
        assert other.is_running()
        run_there(other, GLOBAL_LOGGING_WORKER.stop())  # LiteLLM's own, before its loop closes
    check = RedisUsageStore(redis_url, prefix=key_prefix)
    try:
        assert [e.role for e in await check.events("bo")] == ["user", "assistant"]
    finally:
        await check.aclose()
