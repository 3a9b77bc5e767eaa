"""The rollup is the fold of the raw events: signals read from either store's rollup equal
``compute_signals`` over the same events, whatever the batches, retries and arrival order
within the reorder window; and the Lua fold (Redis) equals the Python one (memory) for any
arrival order at all, late events beyond the window included.

Timelines are random: gaps from seconds to days (sessions start and end), users who travel
between zones (local days going backwards), DST changes (half-hour Lord Howe among them), cues,
scores and exposure."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_mw.signals import UsageEvent
from persona_mw.signals.compute import CUE_NAMES, compute_signals
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.usage_store import (
    MemoryUsageStore,
    RedisUsageStore,
    UsageRollup,
    UsageStore,
)

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Kiritimati",
    "America/St_Johns",
)
#: Just before DST changes: US spring forward, EU spring forward, EU fall back, Lord Howe.
STARTS = (
    datetime(2025, 3, 8, 20, tzinfo=UTC),
    datetime(2025, 3, 29, 22, tzinfo=UTC),
    datetime(2025, 10, 25, 22, tzinfo=UTC),
    datetime(2025, 4, 5, 12, tzinfo=UTC),
)
#: Seconds between consecutive messages: within a reply, within a session, around the idle gap
#: and the active-time cap, overnight, days.
GAPS = st.one_of(
    st.integers(0, 90),
    st.integers(60, 400),
    st.integers(1700, 1900),
    st.integers(3600, 36 * 3600),
    st.integers(2 * 86400, 9 * 86400),
)
WINDOW_S = 600.0
CONFIG = SignalsConfig(relationship_score_threshold=0.5)


@st.composite
def timelines(draw: st.DrawFn, max_events: int = 50) -> list[UsageEvent]:
    t = draw(st.sampled_from(STARTS)) + timedelta(seconds=draw(st.integers(0, 86400)))
    zone = draw(st.sampled_from(ZONES))
    out = []
    for n in range(draw(st.integers(1, max_events))):
        t += timedelta(seconds=draw(GAPS), microseconds=draw(st.integers(1, 999_999)))
        if draw(st.integers(0, 9)) == 0:
            zone = draw(st.sampled_from(ZONES))  # the user travels
        role = draw(st.sampled_from(("user", "assistant")))
        analysed = draw(st.booleans())
        out.append(
            UsageEvent(
                "ada",
                t,
                role,
                tz=zone,
                minor=draw(st.booleans()),
                cues=frozenset(draw(st.sets(st.sampled_from(CUE_NAMES))))
                if role == "user" and analysed
                else frozenset(),
                relationship_score=draw(st.none() | st.floats(0, 1)) if role != "user" else None,
                exposure=frozenset(draw(st.sets(st.sampled_from(("style", "name")))))
                if role != "user"
                else frozenset(),
                request_id=f"r{n}",
                analysed=analysed,
            )
        )
    return out


@st.composite
def deliveries(
    draw: st.DrawFn, *, within_window: bool
) -> tuple[list[UsageEvent], list[list[UsageEvent]]]:
    """A timeline and the batches it reaches the store in. Within the window each event is
    delayed by less than half the reorder window (so no later event can have been folded
    before it arrives); otherwise any order. Some batches are sent twice (a retry)."""
    events = draw(timelines())
    if within_window:
        delays = [draw(st.floats(0, WINDOW_S / 2 - 1)) for _ in events]
        arrival = [
            e
            for _, e in sorted(
                zip(delays, events, strict=True), key=lambda de: de[1].ts + timedelta(seconds=de[0])
            )
        ]
    else:
        arrival = draw(st.permutations(events))
    batches: list[list[UsageEvent]] = []
    i = 0
    while i < len(arrival):
        size = draw(st.integers(1, 8))
        batches.append(list(arrival[i : i + size]))
        if draw(st.integers(0, 5)) == 0:
            batches.append(list(arrival[i : i + size]))
        i += size
    return events, batches


async def _rollup(store: UsageStore, batches: list[list[UsageEvent]]) -> UsageRollup:
    for batch in batches:
        await store.append(batch)
    return await store.rollup("ada")


def _memory(**kw: Any) -> MemoryUsageStore:
    return MemoryUsageStore(retention_days=None, signals=CONFIG, reorder_window_s=WINDOW_S, **kw)


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(case=deliveries(within_window=True), extra_minutes=st.integers(0, 3 * 24 * 60))
def test_memory_rollup_signals_equal_the_raw_events(
    case: tuple[list[UsageEvent], list[list[UsageEvent]]], extra_minutes: int
) -> None:
    events, batches = case
    rollup = asyncio.run(_rollup(_memory(reorder_max_events=10_000), batches))
    now = max(e.ts for e in events) + timedelta(minutes=extra_minutes)
    assert rollup.events == len(events)
    assert rollup.digest(CONFIG).signals(now) == compute_signals(events, now, CONFIG)


@PROPERTY
@given(case=deliveries(within_window=True))
def test_a_tiny_reorder_cap_still_counts_everything_in_order(
    case: tuple[list[UsageEvent], list[list[UsageEvent]]],
) -> None:
    """With the pending set capped at 0 every event folds on arrival; what arrived in order
    equals the raw fold, and nothing is ever lost or counted twice."""
    events, batches = case
    rollup = asyncio.run(_rollup(_memory(reorder_max_events=0), batches))
    digest = rollup.digest(CONFIG)
    assert rollup.pending == () and digest.count == len(events)
    now = max(e.ts for e in events)
    got, want = digest.signals(now), compute_signals(events, now, CONFIG)
    assert sum(d.messages for d in got.history) == sum(d.messages for d in want.history)
    assert got.assistant_messages == want.assistant_messages


@pytest.fixture(scope="module")
def redis_prefix(redis_url: str) -> Any:
    prefix = f"pmwtest-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


REDIS_PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@REDIS_PROPERTY
@given(
    case=deliveries(within_window=False),
    max_pending=st.sampled_from((0, 3, 10_000)),
)
def test_lua_fold_equals_the_python_fold(
    redis_url: str,
    redis_prefix: str,
    case: tuple[list[UsageEvent], list[list[UsageEvent]]],
    max_pending: int,
) -> None:
    """Any arrival order (late events beyond the window included), any pending cap: Redis's
    rollup is the memory store's, day by day, and so are the signals."""
    events, batches = case

    async def both() -> tuple[UsageRollup, UsageRollup]:
        store = RedisUsageStore(
            redis_url,
            prefix=f"{redis_prefix}{uuid.uuid4().hex[:6]}:",
            retention_days=None,
            signals=CONFIG,
            reorder_window_s=WINDOW_S,
            reorder_max_events=max_pending,
        )
        try:
            stored = await _rollup(store, batches)
            await store.erase("ada")
        finally:
            await store.aclose()
        return stored, await _rollup(_memory(reorder_max_events=max_pending), batches)

    stored, memory = asyncio.run(both())
    assert stored.days == memory.days
    assert stored.pending == memory.pending
    assert stored.events == memory.events == len(events)
    got, want = stored.state, memory.state
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert (got.last.ts, got.last.role, got.last.tz, got.last.minor) == (
            want.last.ts,
            want.last.role,
            want.last.tz,
            want.last.minor,
        )
        assert (got.last_day, got.session_start, got.session_days) == (
            want.last_day,
            want.session_start,
            want.session_days,
        )
    now = max(e.ts for e in events)
    assert stored.digest(CONFIG).signals(now) == memory.digest(CONFIG).signals(now)
