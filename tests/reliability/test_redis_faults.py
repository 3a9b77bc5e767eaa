"""Redis stops and comes back in the middle of a load run, through the Middleware and through the
server: requests keep being served, tier 1 holds throughout, usage is buffered (bounded) and
written after recovery, and the books balance (produced == stored + dropped).

Two queue sizes: the default one, which holds everything an outage of seconds produces (**no
event is lost**: every event produced is in Redis afterwards), and a small one that overflows
(drops are counted, never silent, and everything kept is written). Each phase lasts until what
it is there to exercise has happened (requests, crisis messages and profile fallbacks during the
outage; the overflow; requests after recovery), not for a fixed time, so a loaded machine makes
the run longer, not the test wrong.

Everything is real: a redis-server process of this test's own (stopped and restarted on the same
port), the bounds / personalisation / usage stages as a deployment wires them, LiteLLM calling a
local OpenAI-style upstream over HTTP.
"""

from __future__ import annotations

import asyncio
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
WORKERS = 12
#: The recorder's default: an outage of seconds fits, nothing is dropped.
LOSSLESS = 10_000
#: Small on purpose: the outage lasts until it overflowed, so drops are exercised too.
SMALL = 120
#: Requests (and crisis messages among them) each phase must see before it ends.
PER_PHASE, CRISIS_PER_PHASE = 24, 2
#: How long a phase may take to see them, on a loaded machine.
PHASE_LIMIT_S = 90.0


@dataclass
class Run:
    """What the load generator saw, per phase ("up", "down", "back")."""

    phase: str = "up"
    sent: Counter[str] = field(default_factory=Counter)
    #: Requests answered, by the phase they were sent in.
    done: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    crisis_replies: list[tuple[str, str]] = field(default_factory=list)
    outage: tuple[datetime, datetime] | None = None
    #: Records in the books when the profile feed was back up (later ones, after the requests
    #: then in flight, were all sent after recovery).
    recovered_at: int = 0
    #: The most usage events the recorder held at once (during the outage).
    peak_pending: int = 0

    def crisis_in(self, phase: str) -> int:
        return sum(1 for p, _ in self.crisis_replies if p == phase)


def _middleware(
    url: str, prefix: str, books: Books, llm: Any = None, *, queue: int
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
    workers: int = WORKERS,
) -> None:
    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            user = USERS[(n + i) % len(USERS)]
            crisis = (n + i) % 5 == 0  # one message in five, in every phase
            phase = run.phase
            run.sent[phase] += 1
            try:
                reply = await send(user, CRISIS if crisis else f"question {i} from worker {n}")
            except Exception as exc:
                run.failed.append(f"{phase}: {type(exc).__name__}: {exc}")
            else:
                run.done[phase] += 1
                if crisis:
                    run.crisis_replies.append((phase, reply))
            i += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))


def _phase_done(run: Run, phase: str) -> bool:
    return run.done[phase] >= PER_PHASE and run.crisis_in(phase) >= CRISIS_PER_PHASE


async def _until(check: Callable[[], bool], what: str, run: Run, recorder: UsageRecorder) -> None:
    """Wait for ``what`` (``check``); a timeout says where the run stood."""
    started = time.monotonic()
    try:
        await wait_until(check, within_s=PHASE_LIMIT_S)
    except AssertionError:
        raise AssertionError(
            f"{what}: not within {PHASE_LIMIT_S} s; sent {dict(run.sent)}, answered "
            f"{dict(run.done)}, crisis replies {Counter(p for p, _ in run.crisis_replies)}, "
            f"failed {run.failed[:3]}, usage produced {recorder.produced} stored "
            f"{recorder.stored} dropped {recorder.dropped} pending {recorder.pending} "
            f"write failures {recorder.write_failures}"
        ) from None
    print(f"  {what}: {time.monotonic() - started:.1f} s")


async def _outage(
    server: RedisServer,
    run: Run,
    books: Books,
    recorder: UsageRecorder,
    feed_up: Callable[[], bool],
    *,
    overflow: bool,
) -> None:
    """Up until the phase is exercised; stop Redis (saving); down until requests, crisis
    messages and profile fallbacks were served without it, at least 1.5 s and, with
    ``overflow``, until the recorder's queue overflowed; restart; back until the feed is up and
    requests sent after it were answered."""
    await _until(lambda: _phase_done(run, "up"), "up: requests served", run, recorder)
    started = datetime.now(UTC)
    # SHUTDOWN SAVE: the restarted server has the profiles and every write acknowledged before
    # the stop (a SAVE then SIGTERM would lose the writes in between: not what we test here).
    await asyncio.to_thread(redis.Redis.from_url(server.url).shutdown, save=True)
    await asyncio.to_thread(server.stop)
    run.phase = "down"
    down_since = time.monotonic()

    def outage_exercised() -> bool:
        run.peak_pending = max(run.peak_pending, recorder.pending)
        return (
            _phase_done(run, "down")
            and time.monotonic() - down_since >= 1.5
            and any(r.profile_source == "fallback" for r in books.records)
            and recorder.write_failures > 0
            and (recorder.dropped > 0 if overflow else True)
        )

    await _until(outage_exercised, "down: the outage exercised", run, recorder)
    await asyncio.to_thread(server.start)
    run.outage = (started, datetime.now(UTC))
    run.phase = "back"
    await _until(feed_up, "back: the profile feed up", run, recorder)
    run.recovered_at = len(books.records)
    await _until(
        lambda: (
            len(books.records) >= run.recovered_at + WORKERS + PER_PHASE
            and _phase_done(run, "back")
        ),
        "back: requests served after recovery",
        run,
        recorder,
    )


def _assert_books(
    run: Run,
    books: Books,
    recorder: UsageRecorder,
    url: str,
    prefix: str,
    warm: int,
    *,
    overflow: bool,
) -> dict[str, Any]:
    """``warm``: events the warm-up requests produced before the run (written, not dropped)."""
    assert not run.failed, run.failed[:5]
    total = sum(run.sent.values())
    # every request the client sent was finished by the middleware and recorded
    assert len(books.records) == total == sum(run.done.values())
    assert books.outcomes() == Counter({"ok": total})
    # profiles: served from the stale cache during the outage, from Redis again afterwards
    by_user = {u: f"rules of {u}" for u in USERS}
    assert all(r.own_rules == by_user[r.user_id] for r in books.records), Counter(
        (r.profile_source, r.own_rules == by_user[r.user_id]) for r in books.records
    )
    after_recovery = books.records[run.recovered_at + WORKERS :]
    assert len(after_recovery) >= PER_PHASE
    assert {r.profile_source for r in after_recovery} <= {"cache", "store"}
    assert any(r.profile_source == "fallback" for r in books.records)
    # tier 1 in every phase: each crisis message got the crisis protocol (rule + resources)
    crisis_records = [
        r for r in books.records if any(rule.startswith("crisis") for rule, _ in r.rules)
    ]
    assert len(crisis_records) == len(run.crisis_replies)
    assert all(("crisis.ideation", 1) in r.rules for r in crisis_records)
    assert all(run.crisis_in(phase) >= CRISIS_PER_PHASE for phase in ("up", "down", "back"))
    assert all("988" in reply for _, reply in run.crisis_replies)
    # the usage books
    assert recorder.pending == 0
    assert recorder.produced - warm == 2 * total
    assert recorder.produced == recorder.stored + recorder.dropped
    assert recorder.write_failures > 0, "the writer never met the outage"
    stored_in_redis, during_outage = _count_events(url, prefix, run)
    assert stored_in_redis == recorder.stored
    assert during_outage > 0, "events produced during the outage were not written afterwards"
    if overflow:
        assert recorder.dropped > 0
        assert run.peak_pending == recorder.queue_size
    else:
        # nothing lost: every event produced, the outage's included, is in Redis
        assert recorder.dropped == 0
        assert stored_in_redis == recorder.produced
        assert run.peak_pending >= 2 * PER_PHASE, "the outage buffered (almost) nothing"
    return {
        "requests": total,
        "during_outage": run.sent["down"],
        "produced": recorder.produced - warm,
        "stored": recorder.stored - warm,
        "dropped": recorder.dropped,
        "peak_pending": run.peak_pending,
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


QUEUES = pytest.mark.parametrize(
    ("queue", "overflow"), [(LOSSLESS, False), (SMALL, True)], ids=["lossless", "overflow"]
)


@QUEUES
async def test_redis_restart_under_load_through_the_middleware(
    own_redis: RedisServer, upstream: FakeOpenAIServer, queue: int, overflow: bool
) -> None:
    prefix = "rel:"
    await _seed(own_redis.url, prefix)
    books = Books()
    mw, recorder = _middleware(own_redis.url, prefix, books, queue=queue)
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
    feed_up = lambda: mw.store.feed_up  # type: ignore[attr-defined]  # noqa: E731
    try:
        try:
            await _outage(own_redis, run, books, recorder, feed_up, overflow=overflow)
        finally:
            stop.set()
            await load
        assert await recorder.flush(timeout_s=15)
        figures = _assert_books(
            run, books, recorder, own_redis.url, prefix, warm_produced, overflow=overflow
        )
    finally:  # also after a failure: the usage writer must not retry past the test
        await mw.aclose()
    print("\nredis restart, middleware:", figures)


@QUEUES
async def test_redis_restart_under_load_through_the_server(
    own_redis: RedisServer, upstream: FakeOpenAIServer, queue: int, overflow: bool
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
        own_redis.url, prefix, books, LiteLLMClient(router=router), queue=queue
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
            feed_up = lambda: mw.store.feed_up  # type: ignore[attr-defined]  # noqa: E731
            try:
                await _outage(own_redis, run, books, recorder, feed_up, overflow=overflow)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        started = time.monotonic()
    # the server's shutdown closed the middleware, which flushed the recorder
    assert time.monotonic() - started < 30
    figures = _assert_books(
        run, books, recorder, own_redis.url, prefix, warm_produced, overflow=overflow
    )
    assert ("down", 503) in readiness and readiness[-1][1] == 200, readiness
    print("\nredis restart, server:", figures)
