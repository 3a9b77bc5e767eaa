"""Redis stops and comes back in the middle of a load run, through the Middleware and through the
server: requests keep being served, tier 1 holds throughout, usage is buffered (bounded) and
written after recovery, and the books balance (produced == stored + dropped).

Everything is real: a redis-server process of this test's own (stopped and restarted on the same
port), the bounds / personalisation / usage stages as a deployment wires them, LiteLLM calling a
local OpenAI-style upstream over HTTP.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from rel_helpers import Books, RedisServer, wait_until

from persona_mw import Middleware, Profile, RedisProfileStore, Settings
from persona_mw.bounds import BoundsConfig, bounds_stages
from persona_mw.llm import LiteLLMClient, import_litellm
from persona_mw.personalise import PersonaliseStage
from persona_mw.signals.recorder import UsageRecorder
from persona_mw.signals.usage_store import RedisUsageStore
from persona_mw.stores import CachedProfileStore
from persona_mw.testing import FakeOpenAIServer

pytestmark = pytest.mark.redis

USERS = [f"load-user-{i}" for i in range(8)]
CRISIS = "honestly I want to end my life"
MODEL = "openai/fake"
#: Small on purpose: a 1.5 s outage at this load overflows it, so drops are exercised too
#: (the HTTP run is slower, so it gets a smaller queue).
QUEUE, SERVER_QUEUE = 300, 120


@dataclass
class Run:
    """What the load generator saw, per phase ("up", "down", "back")."""

    phase: str = "up"
    sent: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    crisis_replies: list[tuple[str, str]] = field(default_factory=list)
    outage: tuple[datetime, datetime] | None = None


def _middleware(
    url: str, prefix: str, books: Books, llm: Any = None, queue: int = QUEUE
) -> tuple[Middleware, UsageRecorder]:
    check_input, check_output = bounds_stages(BoundsConfig())  # tier-1 baseline packs
    recorder = UsageRecorder(
        RedisUsageStore(url, prefix=prefix, socket_timeout=0.3),
        queue_size=queue,
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )
    mw = Middleware(
        store=RedisProfileStore(url, prefix=prefix, socket_timeout=0.3),
        input_stages=[check_input, PersonaliseStage()],
        output_stages=[check_output],
        finish_stages=[recorder, books],
        llm=llm,
        settings=Settings(hash_secret="reliability", profile_cache_ttl_s=60),
    )
    return mw, recorder


async def _seed(url: str, prefix: str) -> None:
    seeder = RedisProfileStore(url, prefix=prefix)
    for user in USERS:
        await seeder.put(
            Profile(user_id=user, own_rules=f"rules of {user}", consent={"personalisation": True})
        )
    await seeder.aclose()


async def _load(
    send: Callable[[str, str], Awaitable[str]],
    run: Run,
    stop: asyncio.Event,
    *,
    workers: int = 12,
) -> None:
    rng = random.Random(8)

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            user = USERS[(n + i) % len(USERS)]
            crisis = rng.random() < 0.2
            phase = run.phase
            run.sent[phase] += 1
            try:
                reply = await send(user, CRISIS if crisis else f"question {i} from worker {n}")
            except Exception as exc:
                run.failed.append(f"{phase}: {type(exc).__name__}: {exc}")
            else:
                if crisis:
                    run.crisis_replies.append((phase, reply))
            i += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))


async def _outage(server: RedisServer, run: Run, feed_up: Callable[[], bool]) -> None:
    """1 s up, stop Redis (saving), 1.5 s down, restart, wait for the feed, 1 s more."""
    await asyncio.sleep(1.0)
    started = datetime.now(UTC)
    # SHUTDOWN SAVE: the restarted server has the profiles and every write acknowledged before
    # the stop (a SAVE then SIGTERM would lose the writes in between: not what we test here).
    await asyncio.to_thread(redis.Redis.from_url(server.url).shutdown, save=True)
    await asyncio.to_thread(server.stop)
    run.phase = "down"
    await asyncio.sleep(1.5)
    await asyncio.to_thread(server.start)
    run.outage = (started, datetime.now(UTC))
    run.phase = "back"
    await wait_until(feed_up, within_s=10)
    await asyncio.sleep(1.0)


def _assert_books(
    run: Run, books: Books, recorder: UsageRecorder, url: str, prefix: str, warm: int
) -> dict[str, Any]:
    """``warm``: events the warm-up requests produced before the run (written, not dropped)."""
    assert not run.failed, run.failed[:5]
    total = sum(run.sent.values())
    assert run.sent["down"] >= 20, f"too little load during the outage: {run.sent}"
    # every request the client sent was finished by the middleware and recorded
    assert len(books.records) == total
    assert books.outcomes() == Counter({"ok": total})
    # profiles: served from the stale cache during the outage, from Redis again afterwards
    by_user = {u: f"rules of {u}" for u in USERS}
    assert all(r.own_rules == by_user[r.user_id] for r in books.records), Counter(
        (r.profile_source, r.own_rules == by_user[r.user_id]) for r in books.records
    )
    assert {r.profile_source for r in books.records[-20:]} <= {"cache", "store"}
    assert any(r.profile_source == "fallback" for r in books.records)
    # tier 1 in every phase: each crisis message got the crisis protocol (rule + resources)
    crisis_records = [
        r for r in books.records if any(rule.startswith("crisis") for rule, _ in r.rules)
    ]
    assert len(crisis_records) == len(run.crisis_replies)
    assert all(("crisis.ideation", 1) in r.rules for r in crisis_records)
    assert {phase for phase, _ in run.crisis_replies} == {"up", "down", "back"}
    assert all("988" in reply for _, reply in run.crisis_replies)
    # the usage books
    assert recorder.pending == 0
    assert recorder.produced - warm == 2 * total
    assert recorder.produced == recorder.stored + recorder.dropped
    assert recorder.dropped > 0, "the outage should have overflowed the small queue"
    stored_in_redis, during_outage = _count_events(url, prefix, run)
    assert stored_in_redis == recorder.stored
    assert during_outage > 0, "events produced during the outage were not written afterwards"
    return {
        "requests": total,
        "during_outage": run.sent["down"],
        "produced": recorder.produced - warm,
        "stored": recorder.stored - warm,
        "dropped": recorder.dropped,
        "written_from_outage": during_outage,
    }


def _count_events(url: str, prefix: str, run: Run) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        store = RedisUsageStore(url, prefix=prefix)
        try:
            events = [e for user in USERS for e in await store.events(user)]
            # The rollups folded each stored event exactly once, across the restart too (the
            # scripts are reloaded on NOSCRIPT; a retried batch folds nothing twice).
            folded = [(await store.rollup(user)).events for user in USERS]
            assert sum(folded) == len(events), (sum(folded), len(events))
        finally:
            await store.aclose()
        assert run.outage is not None
        start, end = run.outage
        return len(events), sum(1 for e in events if start <= e.ts <= end)

    return _run_in_thread(count)


def _run_in_thread(make: Callable[[], Awaitable[tuple[int, int]]]) -> tuple[int, int]:
    """Run a coroutine on a fresh loop in a thread (the test's own loop is busy awaiting us)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=8) as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


async def test_redis_restart_under_load_through_the_middleware(
    own_redis: RedisServer, upstream: FakeOpenAIServer
) -> None:
    prefix = "rel:"
    await _seed(own_redis.url, prefix)
    books = Books()
    mw, recorder = _middleware(own_redis.url, prefix, books)
    assert isinstance(mw.store, CachedProfileStore)
    kw = {"api_base": upstream.base_url, "api_key": "x", "num_retries": 0}

    async def send(user: str, text: str) -> str:
        response = await mw.acompletion(
            user=user, model=MODEL, messages=[{"role": "user", "content": text}], **kw
        )
        return str(response.choices[0].message.content)

    for user in USERS:  # warm the cache: these are the copies served during the outage
        await send(user, "hello")
    books.records.clear()
    warm_produced = recorder.produced
    run, stop = Run(), asyncio.Event()
    load = asyncio.create_task(_load(send, run, stop))
    try:
        await _outage(own_redis, run, lambda: mw.store.feed_up)  # type: ignore[attr-defined]
    finally:
        stop.set()
        await load
    assert await recorder.flush(timeout_s=15)
    figures = _assert_books(run, books, recorder, own_redis.url, prefix, warm_produced)
    await mw.aclose()
    print("\nredis restart, middleware:", figures)


async def test_redis_restart_under_load_through_the_server(
    own_redis: RedisServer, upstream: FakeOpenAIServer
) -> None:
    """Same run over HTTP against ``persona_mw_server`` (uvicorn in a thread); /readyz says 503
    while Redis is down and every completion still answers 200."""
    from persona_mw_server import ServerConfig, create_app
    from persona_mw_server.testing import ServerThread

    prefix = "rel-srv:"
    await _seed(own_redis.url, prefix)
    books = Books()
    model_list = [
        {
            "model_name": "fake",
            "litellm_params": {"model": MODEL, "api_base": upstream.base_url, "api_key": "x"},
        }
    ]
    router = import_litellm().Router(model_list=model_list, num_retries=0)
    mw, recorder = _middleware(
        own_redis.url, prefix, books, LiteLLMClient(router=router), queue=SERVER_QUEUE
    )
    config = ServerConfig.model_validate({"persona": {"model_list": model_list}})
    readiness: list[tuple[str, int]] = []
    with ServerThread(create_app(config, middleware=mw)) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:

            async def send(user: str, text: str) -> str:
                response = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "fake",
                        "user": user,
                        "messages": [{"role": "user", "content": text}],
                    },
                )
                response.raise_for_status()
                return str(response.json()["choices"][0]["message"]["content"])

            for user in USERS:
                await send(user, "hello")
            books.records.clear()
            warm_produced = recorder.produced
            run, stop = Run(), asyncio.Event()

            async def probe() -> None:
                while not stop.is_set():
                    readiness.append((run.phase, (await client.get("/readyz")).status_code))
                    await asyncio.sleep(0.2)

            tasks = [asyncio.create_task(_load(send, run, stop)), asyncio.create_task(probe())]
            try:
                await _outage(own_redis, run, lambda: mw.store.feed_up)  # type: ignore[attr-defined]
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        started = time.monotonic()
    # the server's shutdown closed the middleware, which flushed the recorder
    assert time.monotonic() - started < 30
    figures = _assert_books(run, books, recorder, own_redis.url, prefix, warm_produced)
    assert ("down", 503) in readiness and readiness[-1][1] == 200, readiness
    print("\nredis restart, server:", figures)
