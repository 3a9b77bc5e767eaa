"""Taking a due action is a claim: of a user's requests in flight at once, exactly one shows the
day's first-interaction disclosure (it once fired on ~20 of 50), on the in-memory store and on
a real Redis shared by two middlewares (two workers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from persona_mw import Middleware, build_middleware, load_config
from persona_mw.bounds.policy import AIDisclosure
from persona_mw.signals import SignalsConfig, run_ladder
from persona_mw.signals.action_state import (
    ActionStateStore,
    MemoryActionStateStore,
    RedisActionStateStore,
    claim_due,
)
from persona_mw.signals.compute import UsageDigest
from persona_mw.signals.events import UsageEvent
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
