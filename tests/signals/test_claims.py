"""Taking a due action is a claim: of a user's requests in flight at once, exactly one shows the
day's first-interaction disclosure (it once fired on ~20 of 50), on the in-memory store and on
a real Redis shared by two middlewares (two workers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from persona_mw import Middleware, build_middleware, load_config
from persona_mw.bounds.policy import AIDisclosure
from persona_mw.signals import SignalsConfig, UsageEvent, run_ladder
from persona_mw.signals.action_state import (
    ActionStateStore,
    MemoryActionStateStore,
    RedisActionStateStore,
    claim_due,
)
from persona_mw.signals.compute import UsageDigest
from persona_mw.signals.ladder import DisclosurePolicy

MODEL = "openai/fake"
DISCLOSURE = AIDisclosure().text
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def states(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str
) -> AsyncIterator[ActionStateStore]:
    store: ActionStateStore = (
        MemoryActionStateStore()
        if request.param == "memory"
        else RedisActionStateStore(redis_url, prefix=key_prefix)
    )
    yield store
    await store.aclose()


async def test_a_claim_is_compare_and_set(states: ActionStateStore) -> None:
    later = T0 + timedelta(hours=1)
    assert await states.claim("u", {"ai_disclosure": None}, {"ai_disclosure": T0}) == {
        "ai_disclosure"
    }
    # a second request that read the same (empty) state loses; one that read T0 wins
    assert await states.claim("u", {"ai_disclosure": None}, {"ai_disclosure": later}) == set()
    assert await states.get("u") == {"ai_disclosure": T0}
    taken = {"ai_disclosure": later, "log": later}
    assert await states.claim("u", {"ai_disclosure": T0, "log": None}, taken) == set(taken)
    assert await states.get("u") == taken


async def test_first_seen_once_per_scope_and_period_and_erased_with_the_user(
    states: ActionStateStore,
) -> None:
    march = {"ca|month": "statutory:2027-03", "ca|year": "statutory:2027"}
    assert await states.first_seen("u", march) == set(march)
    assert await states.first_seen("u", march) == set()
    assert await states.first_seen("v", march) == set(march)
    april = {"ca|month": "statutory:2027-04", "ca|year": "statutory:2027"}
    assert await states.first_seen("u", april) == {"ca|month"}
    await states.claim("u", {}, {"log": T0})
    assert await states.delete("u") is True
    assert await states.get("u") == {}
    # erased: nothing of theirs is left, so they count as new (an erased user is a stranger)
    assert await states.first_seen("u", april) == set(april)


async def test_a_state_another_request_claimed_stays_in_force_but_is_not_new(
    states: ActionStateStore,
) -> None:
    """Two requests reach the daily cap at once: both still answer with the cap (a state holds
    while it holds), only one logs it as new; a notice the other claimed is dropped."""
    config = SignalsConfig(daily_cap_minutes=30)
    digest = UsageDigest(config)
    for minute in range(0, 100, 5):
        digest.add(UsageEvent(user_id="u", ts=T0 + timedelta(minutes=minute), role="user"))
    signals = digest.signals(T0 + timedelta(minutes=95))
    told = DisclosurePolicy("all", None, "an AI")
    first = run_ladder(signals, config=config, disclosure=told, state={})
    second = run_ladder(signals, config=config, disclosure=told, state={})
    assert {"daily_cap_reached", "ai_disclosure"} <= set(first.kinds)
    won = await claim_due(states, "u", {}, first)
    lost = await claim_due(states, "u", {}, second)
    assert won == first
    cap = lost.get("daily_cap_reached")
    assert cap is not None and cap.new is False
    assert "ai_disclosure" not in lost.kinds
    assert all(not a.new for a in lost.actions)


class ReplyDropper:
    """A loopback relay in front of a real Redis: bytes pass through unchanged, except that the
    reply to the first EVAL is swallowed and both sides hung up on. The server has run the
    script; the client never hears, so it sends the script again on a new connection."""

    def __init__(self, redis_url: str) -> None:
        where = urlsplit(redis_url)
        self._upstream = (where.hostname or "127.0.0.1", where.port or 6379)
        self._db = where.path
        self._server: asyncio.Server | None = None
        self._dropped = False
        #: EVAL commands passed to the server (a retried script counts twice).
        self.evals = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._db}"

    async def __aenter__(self) -> ReplyDropper:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _relay(
        self, from_client: asyncio.StreamReader, to_client: asyncio.StreamWriter
    ) -> None:
        from_server, to_server = await asyncio.open_connection(*self._upstream)
        drop_next_reply = asyncio.Event()

        async def upstream() -> None:
            while chunk := await from_client.read(65536):
                if b"\r\nEVAL\r\n" in chunk:
                    self.evals += 1
                    if not self._dropped:
                        self._dropped = True
                        drop_next_reply.set()
                to_server.write(chunk)
                await to_server.drain()

        async def downstream() -> None:
            while chunk := await from_server.read(65536):
                if drop_next_reply.is_set():
                    return
                to_client.write(chunk)
                await to_client.drain()

        try:
            both = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            for task in both:
                task.cancel()
        finally:
            for writer in (to_client, to_server):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


@pytest.fixture
async def lossy_states(
    redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[ReplyDropper, RedisActionStateStore]]:
    """A Redis due-state whose first script reply is lost; the client retries once (redis-py's
    default retry differs between versions, so it is set here)."""
    async with ReplyDropper(redis_url) as relay:
        client = redis.asyncio.Redis.from_url(relay.url, retry=Retry(NoBackoff(), 1))
        try:
            yield relay, RedisActionStateStore(client, prefix=key_prefix)
        finally:
            await client.aclose()


@pytest.mark.redis
async def test_a_claim_whose_reply_was_lost_stays_the_claimants(
    lossy_states: tuple[ReplyDropper, RedisActionStateStore],
) -> None:
    """The server ran the claim, its reply was lost, the client sent the script again: the retry
    answers "claimed" as the first run did. It once found the action taken (by its own first run)
    and answered "not claimed", so the one request that took the day's disclosure did not show
    it (0 claims of 5 on the cluster, where redis-py closes connections under a MOVED burst)."""
    relay, states = lossy_states
    assert await states.claim("u", {"ai_disclosure": None}, {"ai_disclosure": T0}) == {
        "ai_disclosure"
    }
    assert relay.evals == 2, "the script's reply was not lost and retried"
    # another request that read the same state, with the same time, is still refused
    assert await states.claim("u", {"ai_disclosure": None}, {"ai_disclosure": T0}) == set()
    assert await states.get("u") == {"ai_disclosure": T0}
    later = T0 + timedelta(days=1)
    assert await states.claim("u", {"ai_disclosure": T0}, {"ai_disclosure": later}) == {
        "ai_disclosure"
    }


@pytest.mark.redis
async def test_a_scope_mark_whose_reply_was_lost_still_counts_the_user(
    lossy_states: tuple[ReplyDropper, RedisActionStateStore],
) -> None:
    """Same for "first call in scope this period": a retried mark must not answer "seen" (the
    user would be missing from the report's distinct users)."""
    relay, states = lossy_states
    march = {"ca|month": "statutory:2027-03"}
    assert await states.first_seen("u", march) == set(march)
    assert relay.evals == 2, "the script's reply was not lost and retried"
    assert await states.first_seen("u", march) == set()
    assert await states.first_seen("u", {"ca|month": "statutory:2027-04"}) == {"ca|month"}


@pytest.mark.redis
async def test_counts_whose_reply_was_lost_are_added_once(
    lossy_states: tuple[ReplyDropper, RedisActionStateStore],
) -> None:
    """A call's counts go in one script per period under the call's token: the server added
    them, the reply was lost, the client sent the script again, and nothing counted twice (a
    plain HINCRBY retried this way counted the call twice in the statutory report)."""
    relay, states = lossy_states
    counts = {
        "statutory:2027-03": {"calls_in_scope|us-ca-sb243": 1, "crisis_referrals|us-ca-sb243": 2},
        "2027": {"crisis_referrals": 2},
    }
    await states.add_counts(counts, token="call-1")
    assert relay.evals >= 2, "the script's reply was not lost and retried"
    assert await states.counters("statutory:2027-03") == counts["statutory:2027-03"]
    assert await states.counters("2027") == {"crisis_referrals": 2}
    # another call (another token) counts again; the same token again does not
    await states.add_counts(counts, token="call-2")
    await states.add_counts(counts, token="call-2")
    assert await states.counters("2027") == {"crisis_referrals": 4}


async def test_counts_add_up_per_period_and_skip_zeros(states: ActionStateStore) -> None:
    await states.add_counts({"p1": {"a": 1, "b": 0}, "p2": {}}, token="t1")
    await states.add_counts({"p1": {"a": 2}}, token="t2")
    await states.incr("b", "p1", 3)
    assert await states.counters("p1") == {"a": 3, "b": 3}
    assert await states.counters("p2") == {}


async def _burst(workers: list[Middleware], user: str, n: int) -> list[str]:
    async def one(i: int) -> str:
        reply = await workers[i % len(workers)].acompletion(
            user=user,
            model=MODEL,
            messages=[{"role": "user", "content": f"message {i}"}],
            mock_response="ok",
        )
        return str(reply.choices[0].message.content)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_fifty_requests_in_flight_show_the_days_disclosure_once_in_memory() -> None:
    mw = build_middleware(load_config(None, settings={"hash_secret": "t"}))
    try:
        replies = await _burst([mw], "eager", 50)
    finally:
        await mw.aclose()
    assert sum(DISCLOSURE in r for r in replies) == 1


@pytest.mark.redis
async def test_fifty_requests_over_two_workers_sharing_redis_show_it_once(
    redis_url: str, key_prefix: str
) -> None:
    store = {"url": redis_url, "prefix": key_prefix}
    workers = [
        build_middleware(load_config(None, store=store, settings={"hash_secret": "t"}))
        for _ in range(2)
    ]
    try:
        replies = await _burst(workers, "eager", 50)
        # the next request of the day is not told again; a new user is
        later = await _burst(workers, "eager", 2)
        other = await _burst(workers, "other", 1)
    finally:
        for mw in workers:
            await mw.aclose()
    assert sum(DISCLOSURE in r for r in replies) == 1
    assert not any(DISCLOSURE in r for r in later)
    assert DISCLOSURE in other[0]
