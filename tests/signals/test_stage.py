"""The dependence stage end to end: usage in a store, the real middleware, LiteLLM mock replies,
due-state in memory and in a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import CollectorRegistry

from persona_mw.bounds.policy import AIDisclosure
from persona_mw.errors import StoreError
from persona_mw.pipeline import Middleware
from persona_mw.profile import Consent, Limits, Profile
from persona_mw.signals import UsageEvent
from persona_mw.signals.action_state import MemoryActionStateStore, RedisActionStateStore
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.metrics import SignalsMetrics
from persona_mw.signals.recorder import UsageRecorder
from persona_mw.signals.stage import DependenceStage
from persona_mw.signals.usage_store import MemoryUsageStore, UsageRollup
from persona_mw.stores.keys import index_key
from persona_mw.stores.memory import MemoryProfileStore
from persona_mw.stores.redis import RedisProfileStore
from persona_mw.testing import capture_logs
from persona_mw.types import CallContext

from .timelines import session

MODEL = "gpt-4o-mini"


class EventLog(MemoryUsageStore):
    """The in-memory usage store, pre-filled with ``events``, counting rollup reads; with
    ``fail`` it is unreachable."""

    def __init__(self, events: Sequence[UsageEvent] = (), *, fail: bool = False) -> None:
        super().__init__(retention_days=None)
        self.initial = list(events)
        self.fail = fail
        self.calls = 0

    async def rollup(self, user_id: str) -> UsageRollup:
        self.calls += 1
        if self.fail:
            raise StoreError("usage store unreachable (test)")
        if self.initial:
            await self.append(self.initial)
            self.initial = []
        return await super().rollup(user_id)


def noon_zone(now: datetime) -> str:
    """A fixed-offset zone where it is about noon now, so "today" never straddles midnight."""
    offset = 12 - now.astimezone(UTC).hour
    offset = max(-12, min(14, offset))
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def context(
    profile: Profile,
    text: str = "hello",
    *,
    at: datetime | None = None,
    request_id: str = "r1",
    state: dict[str, Any] | None = None,
) -> CallContext:
    messages = [{"role": "user", "content": text}]
    return CallContext(
        request_id=request_id,
        user_id=profile.user_id,
        user_hash="hash-" + profile.user_id[:2],
        model=MODEL,
        messages=messages,
        prompt_messages=list(messages),
        stream=False,
        llm_kwargs={},
        profile=profile,
        profile_source="store",
        started_at=at or datetime.now(UTC),
        state=state or {},
    )


def stage(source: EventLog, **kw: Any) -> DependenceStage:
    return DependenceStage(source, metrics=SignalsMetrics(CollectorRegistry()), **kw)


async def test_minor_statutory_reminder_through_the_middleware() -> None:
    """A known minor 3 h into a session: the reply carries the statutory reminder once; the next
    request, a minute later, does not."""
    now = datetime.now(UTC)
    tz = noon_zone(now)
    kid = Profile(user_id="kid", known_minor=True, timezone=tz)
    store = MemoryProfileStore()
    await store.put(kid)
    source = EventLog(
        session("kid", now - timedelta(minutes=181), 180, every=10, tz=tz, minor=True)
    )
    config = SignalsConfig(events_cache_ttl_s=0)
    mw = Middleware(store=store, input_stages=[stage(source, config=config)])
    call = {
        "user": "kid",
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "mock_response": "hello!",
    }
    first = (await mw.acompletion(**call)).choices[0].message.content
    assert first.startswith(config.minor_reminder_text)
    assert config.ai_disclosure_text not in first  # the statutory text already says it
    assert config.break_reminder_text not in first
    second = (await mw.acompletion(**call)).choices[0].message.content
    assert second == "hello!"


async def test_daily_cap_answers_without_the_model_and_logs_once() -> None:
    now = datetime.now(UTC)
    tz = noon_zone(now)
    user = Profile(user_id="capped", timezone=tz, limits=Limits(daily_cap_minutes=5))
    source = EventLog(session("capped", now - timedelta(minutes=11), 10, every=1, tz=tz))
    dep = stage(source, config=SignalsConfig(events_cache_ttl_s=0))
    with capture_logs() as logs:
        ctx = context(user, at=now)
        await dep(ctx)
        again = context(user, at=now + timedelta(seconds=5), request_id="r2")
        await dep(again)
    for c in (ctx, again):
        assert c.reply == dep.config.daily_cap_text
        assert c.reply_finish_reason == "content_filter"
        assert [d.rule_id for d in c.decisions] == ["signals.daily_cap"]
        assert c.decisions[0].tier == 3
    actions = [e for e in logs if e["event"] == "dependence.action"]
    assert [a["action"] for a in actions] == ["daily_cap_reached"]
    assert actions[0]["user_hash"] == "hash-ca"
    assert actions[0]["signals"]["cap_minutes"] == 5.0
    assert all("capped" not in str(e) for e in logs), "the raw user id must not be logged"


async def test_reduced_personalisation_needs_consent_to_read_text() -> None:
    """The message says "I think I'm addicted": with text-analysis consent personalisation is
    reduced; without it the text is not looked at."""
    now = datetime.now(UTC)
    with_consent = Profile(user_id="a", consent=Consent(text_analysis=True))
    without = Profile(user_id="b")
    dep = stage(EventLog())
    ctx_a = context(with_consent, "I think I'm addicted.", at=now)
    ctx_b = context(without, "I think I'm addicted.", at=now)
    await dep(ctx_a)
    await dep(ctx_b)
    assert ctx_a.exposure.reduced is True
    assert "reduced_personalisation" in ctx_a.signals.kinds
    assert ctx_b.exposure.reduced is False
    assert ctx_b.signals.kinds == []


async def test_policy_disclosure_overrides_the_config() -> None:
    dep = stage(EventLog())
    ctx = context(Profile(user_id="adult"))
    ctx.disclosure = AIDisclosure(audience="all", interval_hours=1, text="Bot here.")
    await dep(ctx)
    assert [(n.text, n.source, n.position) for n in ctx.notices] == [
        ("Bot here.", "signals.ai_disclosure", "before")
    ]
    plain = context(Profile(user_id="adult2"))
    await dep(plain)
    assert plain.notices == []  # default audience: minors only


async def test_store_outage_lets_the_call_through_and_counts_it() -> None:
    metrics = SignalsMetrics(CollectorRegistry())
    dep = DependenceStage(EventLog(fail=True), metrics=metrics)
    ctx = context(Profile(user_id="u"))
    with capture_logs() as logs:
        await dep(ctx)
    assert ctx.reply is None and ctx.notices == []
    assert metrics.registry.get_sample_value("persona_mw_dependence_errors_total") == 1
    assert [e["event"] for e in logs] == ["dependence.unavailable"]


async def test_cache_serves_repeat_requests_and_remembers_the_current_message() -> None:
    source = EventLog()
    dep = stage(source, config=SignalsConfig(events_cache_ttl_s=60))
    now = datetime.now(UTC)
    user = Profile(user_id="u", timezone=noon_zone(now))
    for i in range(3):
        ctx = context(user, at=now + timedelta(seconds=i), request_id=f"r{i}")
        await dep(ctx)
    assert source.calls == 1
    signals_today = ctx.signals
    assert signals_today is not None
    # three requests seen by this process, though the store has recorded none yet
    digest = dep.cached_digest("u")
    assert digest is not None and digest.count == 3


async def test_an_earlier_request_counted_after_a_later_one_still_counts() -> None:
    """Two requests of one user in flight: the later one's message reaches the stage first. The
    earlier one's own message still counts (it is not dropped or deferred to a reload)."""
    source = EventLog()
    dep = stage(source, config=SignalsConfig(events_cache_ttl_s=60))
    now = datetime.now(UTC)
    user = Profile(user_id="u", timezone=noon_zone(now))
    await dep(context(user, at=now + timedelta(seconds=1), request_id="late"))
    early = context(user, at=now, request_id="early")
    await dep(early)
    assert early.signals is not None
    digest = dep.cached_digest("u")
    assert digest is not None
    assert digest.signals(now + timedelta(seconds=2)).messages_today == 2
    await dep(context(user, at=now + timedelta(seconds=2), request_id="next"))
    assert source.calls == 1  # served from the cache throughout
    assert digest.signals(now + timedelta(seconds=3)).messages_today == 3


async def test_metrics_count_actions_without_user_labels() -> None:
    registry = CollectorRegistry()
    dep = DependenceStage(EventLog(), metrics=SignalsMetrics(registry))
    await dep(context(Profile(user_id="kid", known_minor=True)))
    assert (
        registry.get_sample_value(
            "persona_mw_dependence_actions_total", {"action": "ai_disclosure"}
        )
        == 1.0
    )
    assert registry.get_sample_value("persona_mw_dependence_requests_total") == 1.0
    labels = {k for m in registry.collect() for s in m.samples for k in s.labels}
    assert labels <= {"action", "signal", "outcome", "le"}


@pytest.mark.redis
async def test_due_state_in_redis_is_shared_and_erased_with_the_user(
    redis_url: str, key_prefix: str
) -> None:
    """Two stages (two processes' worth) share the due-state: the disclosure fires once; erasing
    the user through the profile store removes the state key (it is in the user's index)."""
    states = [RedisActionStateStore(redis_url, prefix=key_prefix) for _ in range(2)]
    stages = [stage(EventLog(), state_store=s) for s in states]
    kid = Profile(user_id="kid{1}", known_minor=True)
    now = datetime.now(UTC)
    first, second = context(kid, at=now), context(kid, at=now + timedelta(seconds=1))
    await stages[0](first)
    await stages[1](second)
    assert [n.source for n in first.notices] == ["signals.ai_disclosure"]
    assert second.notices == []
    saved = await states[1].get("kid{1}")
    assert saved["ai_disclosure"] == now
    profiles = RedisProfileStore(redis_url, prefix=key_prefix)
    await profiles.put(kid)
    client = redis.asyncio.Redis.from_url(redis_url)
    assert await client.sismember(index_key(key_prefix, "kid{1}"), states[0].key("kid{1}"))
    await client.aclose()
    await profiles.delete("kid{1}")
    assert await states[0].get("kid{1}") == {}
    await profiles.aclose()
    for s in states:
        await s.aclose()


@pytest.mark.redis
async def test_aggregate_counters_in_redis(redis_url: str, key_prefix: str) -> None:
    from persona_mw.signals.metrics import SignalsMetricsStage

    counters = RedisActionStateStore(redis_url, prefix=key_prefix)
    metrics = SignalsMetrics(CollectorRegistry())
    finish = SignalsMetricsStage(metrics, counters=counters)
    from persona_mw.types import Decision

    ctx = context(Profile(user_id="u"))
    ctx.decisions.append(Decision("crisis.self_harm", 1, "input", "crisis", "notify"))
    ctx.decisions.append(Decision("crisis.self_harm.output", 1, "output", "crisis", "append"))
    await finish(ctx)
    await finish(context(Profile(user_id="v")))
    year = str(ctx.started_at.year)
    assert await counters.counters(year) == {"crisis_referrals": 1}
    assert metrics.registry.get_sample_value("persona_mw_crisis_referrals_total") == 1
    await counters.aclose()


async def test_memory_state_store_round_trip() -> None:
    store = MemoryActionStateStore()
    now = datetime.now(UTC)
    await store.set("u", {"log": now})
    assert await store.get("u") == {"log": now}
    assert await store.delete("u") is True
    assert await store.get("u") == {}


async def test_erase_forgets_cached_events_and_due_state() -> None:
    """In memory (the embedded default) nothing else holds the due-state: the stage erases it."""
    source = EventLog()
    states = MemoryActionStateStore()
    dep = stage(source, config=SignalsConfig(events_cache_ttl_s=60), state_store=states)
    kid = Profile(user_id="kid", known_minor=True)
    await dep(context(kid))
    assert "ai_disclosure" in await states.get("kid")
    assert await dep.erase("kid") == 1
    assert await states.get("kid") == {} and dep.cached_digest("kid") is None
    again = context(kid, request_id="r2")
    await dep(again)
    assert source.calls == 2  # reloaded from the store, not served from the old cache
    assert [n.source for n in again.notices] == ["signals.ai_disclosure"]  # state is gone
    assert await dep.erase("nobody") == 0


async def test_usage_report_reads_the_store_and_the_due_state() -> None:
    now = datetime.now(UTC)
    events = session("u", now - timedelta(minutes=30), 5)
    states = MemoryActionStateStore()
    await states.set("u", {"break_reminder": now - timedelta(minutes=5)})
    dep = stage(EventLog(events), state_store=states)
    report = await dep.usage_report("u")
    assert report["events"] == len(events)
    assert report["signals"]["messages_per_day_28"] > 0
    assert [d["day"] for d in report["signals"]["history"]][-1] == report["signals"]["local_date"]
    assert report["actions_last_taken"] == {
        "break_reminder": (now - timedelta(minutes=5)).isoformat()
    }
    empty = await dep.usage_report("stranger")
    assert empty["events"] == 0 and empty["actions_last_taken"] == {}


@pytest.mark.redis
async def test_closing_the_wired_middleware_closes_every_redis_connection(
    redis_url: str, key_prefix: str
) -> None:
    """build_middleware on Redis opens connections for profiles, usage and due-state; closing
    the middleware closes all of them (the due-state store used to stay open)."""
    import asyncio

    import redis.asyncio

    from persona_mw import build_middleware, load_config

    admin = redis.asyncio.Redis.from_url(redis_url)
    name = "pmw-close-test-" + key_prefix.strip(":").replace(":", "-")

    async def clients() -> int:  # ours only: other tests' connections come and go meanwhile
        return sum(1 for c in await admin.client_list() if c.get("name") == name)

    sep = "&" if "?" in redis_url else "?"
    config = load_config(
        None,
        store={"url": f"{redis_url}{sep}client_name={name}", "prefix": key_prefix},
        settings={"hash_secret": "t"},
    )
    mw = build_middleware(config)
    await mw.acompletion(
        user="kid", model=MODEL, messages=[{"role": "user", "content": "hi"}], mock_response="ok"
    )
    assert await clients() >= 3  # profiles, usage, due-state (and the cache's listener)
    await mw.aclose()
    for _ in range(100):  # the server notices closed sockets asynchronously
        if await clients() == 0:
            break
        await asyncio.sleep(0.02)
    assert await clients() == 0
    await admin.aclose()


class SlowLog(EventLog):
    """Holds each rollup read until released, so concurrent requests overlap the load."""

    def __init__(self, events: Sequence[UsageEvent] = (), *, fail: bool = False) -> None:
        super().__init__(events, fail=fail)
        self.release = asyncio.Event()

    async def rollup(self, user_id: str) -> UsageRollup:
        await self.release.wait()
        return await super().rollup(user_id)


@pytest.mark.parametrize("ttl", [0.0, 60.0])
async def test_concurrent_requests_of_one_user_share_one_load(ttl: float) -> None:
    """Fifty requests of one user arrive while nothing is cached: one rollup read, and every
    request's own message is counted (the fifty-first request sees all fifty)."""
    now = datetime.now(UTC)
    user = Profile(user_id="u", timezone=noon_zone(now))
    source = SlowLog(session("u", now - timedelta(minutes=20), 10, every=1))
    dep = stage(source, config=SignalsConfig(events_cache_ttl_s=ttl))
    calls = [
        asyncio.create_task(
            dep(context(user, at=now + timedelta(milliseconds=i), request_id=f"r{i}"))
        )
        for i in range(50)
    ]
    await asyncio.sleep(0.01)
    source.release.set()
    await asyncio.gather(*calls)
    assert source.calls == 1
    last = context(user, at=now + timedelta(seconds=1), request_id="last")
    await dep(last)
    assert source.calls == (2 if ttl == 0 else 1)
    if ttl:
        digest = dep.cached_digest("u")
        assert digest is not None
        assert digest.signals(now + timedelta(seconds=2)).messages_today >= 51 + 11


async def test_a_failed_shared_load_fails_every_waiter_then_retries() -> None:
    """The store is down during a shared load: every waiting request goes on without signals
    (counted, logged), none hangs; the next request loads again."""
    source = SlowLog(fail=True)
    metrics = SignalsMetrics(CollectorRegistry())
    dep = DependenceStage(source, metrics=metrics)
    calls = [
        asyncio.create_task(dep(context(Profile(user_id="u"), request_id=f"r{i}")))
        for i in range(5)
    ]
    await asyncio.sleep(0.01)
    source.release.set()
    await asyncio.gather(*calls)
    errors = metrics.registry.get_sample_value("persona_mw_dependence_errors_total")
    assert source.calls == 1 and errors == 5
    source.fail = False
    await dep(context(Profile(user_id="u"), request_id="again"))
    assert source.calls == 2 and dep.loads_in_flight == 0


@pytest.mark.redis
async def test_wired_erase_removes_rollups_and_the_receipt_says_what_went(
    redis_url: str, key_prefix: str
) -> None:
    """Requests through build_middleware on a real Redis, then erase_user: the receipt counts
    the events and rollup days that were really deleted, and no key of the user is left; the
    usage report read the rollup before and reads nothing after."""
    import redis.asyncio

    from persona_mw import build_middleware, load_config
    from persona_mw.stores.keys import user_tag

    config = load_config(
        None,
        store={"url": redis_url, "prefix": key_prefix},
        settings={"hash_secret": "t"},
        signals={"events_cache_ttl_s": 0},
    )
    mw = build_middleware(config)
    for n in range(13):
        await mw.acompletion(
            user="ada",
            model=MODEL,
            messages=[{"role": "user", "content": f"hi {n}"}],
            mock_response="ok",
        )
    (recorder,) = [s for s in mw.finish_stages if isinstance(s, UsageRecorder)]
    assert await recorder.flush(timeout_s=10)
    report = await mw.usage_report("ada")
    assert report["dependence"]["events"] == 26
    assert report["dependence"]["signals"]["messages_today"] == 13
    erased = await mw.erase_user("ada")
    assert erased["usage"] == {"events": 26, "rollup_days": 0}  # all 26 within the window
    report = await mw.usage_report("ada")
    assert report["dependence"]["events"] == 0
    await mw.aclose()
    admin = redis.asyncio.Redis.from_url(redis_url)
    left = [k async for k in admin.scan_iter(match=f"{key_prefix}*{user_tag('ada')}*")]
    await admin.aclose()
    assert left == []
