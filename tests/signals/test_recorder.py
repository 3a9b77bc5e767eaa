"""The usage recorder: what each request records, off the request path, and that nothing is lost
without being counted (queue full, Redis down, shutdown)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
import structlog

from persona_mw.errors import ConfigError
from persona_mw.pipeline import Middleware
from persona_mw.profile import Consent, Profile
from persona_mw.signals import UsageEvent
from persona_mw.signals.cues import analyse_text
from persona_mw.signals.recorder import UsageRecorder
from persona_mw.signals.usage_store import MemoryUsageStore, RedisUsageStore, UsageStore
from persona_mw.stores.memory import MemoryProfileStore
from persona_mw.testing import capture_logs
from persona_mw.types import CallContext, Notice
from tests.conftest import RedisServer, free_port, loop_in_thread

MODEL = "gpt-4o-mini"
FAST: dict[str, Any] = {"retry_initial_s": 0.01, "retry_max_s": 0.05}


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    redis_store = RedisUsageStore(redis_url, prefix=prefix)
    yield redis_store
    await redis_store.aclose()


def context(
    profile: Profile,
    text: str = "hello there",
    *,
    request_id: str = "r1",
    output: str = "hi! how can I help?",
    outcome: Literal["ok", "blocked", "filtered", "error", "cancelled"] = "ok",
) -> CallContext:
    messages = [{"role": "user", "content": text}]
    ctx = CallContext(
        request_id=request_id,
        user_id=profile.user_id,
        user_hash="h-" + request_id,
        model=MODEL,
        messages=messages,
        prompt_messages=list(messages),
        stream=False,
        llm_kwargs={},
        profile=profile,
        profile_source="store",
        started_at=datetime.now(UTC) - timedelta(seconds=2),
    )
    ctx.output_text, ctx.outcome = output, outcome
    ctx.prompt_tokens, ctx.completion_tokens = 11, 7
    return ctx


def unreachable_store(prefix: str) -> RedisUsageStore:
    return RedisUsageStore(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, socket_timeout=0.2)


def books_balance(recorder: UsageRecorder) -> bool:
    return recorder.produced == recorder.stored + recorder.dropped + recorder.pending


async def test_a_request_through_the_middleware_records_two_events(store: UsageStore) -> None:
    """The real middleware and a LiteLLM mock reply: the user's message at the start of the call,
    the reply after it, with the profile's zone, tokens, sizes and exposure; no text."""
    profiles = MemoryProfileStore()
    await profiles.put(Profile(user_id="ada", timezone="Asia/Tokyo", known_minor=True))
    recorder = UsageRecorder(store)
    mw = Middleware(store=profiles, finish_stages=[recorder])
    before = datetime.now(UTC)
    await mw.acompletion(
        user="ada",
        model=MODEL,
        messages=[{"role": "user", "content": "what is a monad?"}],
        mock_response="a monoid in the category of endofunctors",
        request_id="req-42",
    )
    assert await recorder.flush(timeout_s=5)
    user, reply = await store.events("ada")
    assert (user.role, reply.role) == ("user", "assistant")
    assert before <= user.ts <= reply.ts <= datetime.now(UTC)
    assert user.request_id == reply.request_id == "req-42"
    assert (user.tz, user.minor, reply.tz, reply.minor) == ("Asia/Tokyo", True, "Asia/Tokyo", True)
    assert user.chars == len("what is a monad?")
    assert reply.chars == len("a monoid in the category of endofunctors")
    assert reply.tokens > 0
    assert (user.analysed, user.cues, reply.relationship_score) == (False, frozenset(), None)
    assert recorder.produced == recorder.stored == 2
    await mw.aclose()


@pytest.mark.parametrize(
    ("consent", "analysed", "user_cues", "scored"),
    [
        (True, True, {"dependence"}, True),
        (False, False, set(), False),
    ],
)
async def test_text_is_analysed_only_with_consent(
    consent: bool, analysed: bool, user_cues: set[str], scored: bool
) -> None:
    """With the user's consent the signals' real detector flags the user's message and scores the
    reply; without it the text is never looked at."""
    seen: list[str] = []

    def analyse(text: str, role: Literal["user", "assistant"]) -> Any:
        seen.append(role)
        return analyse_text(text, role)

    store = MemoryUsageStore()
    recorder = UsageRecorder(store, analyse=analyse)
    profile = Profile(user_id="ada", consent=Consent(text_analysis=consent))
    ctx = context(
        profile,
        "honestly I can't live without you anymore",
        output="I'm always here for you, sweetheart. I missed you!",
    )
    await recorder(ctx)
    await recorder.flush(timeout_s=5)
    user, reply = await store.events("ada")
    assert user.analysed is reply.analysed is analysed
    assert set(user.cues) == user_cues
    assert (reply.relationship_score is not None) is scored
    if scored:
        assert reply.relationship_score is not None and reply.relationship_score > 0
    assert seen == (["user", "assistant"] if consent else [])


async def test_our_notices_are_not_analysed_or_counted_as_the_reply() -> None:
    texts: list[str] = []

    def analyse(text: str, role: Literal["user", "assistant"]) -> Any:
        texts.append(text)
        return frozenset(), None

    store = MemoryUsageStore()
    recorder = UsageRecorder(store, analyse=analyse)
    ctx = context(
        Profile(user_id="ada", consent=Consent(text_analysis=True)),
        output="(You are talking to an AI.)\n\nthe answer",
    )
    ctx.notices.append(Notice("(You are talking to an AI.)", "signals.ai_disclosure", "before"))
    await recorder(ctx)
    await recorder.flush(timeout_s=5)
    assert texts[1] == "the answer"
    assert (await store.events("ada"))[1].chars == len("the answer")


@pytest.mark.parametrize(
    ("outcome", "output", "roles"),
    [
        ("ok", "fine", ["user", "assistant"]),
        ("blocked", "I can't help with that.", ["user", "assistant"]),
        ("filtered", "[removed]", ["user", "assistant"]),
        ("cancelled", "partial ans", ["user", "assistant"]),
        ("cancelled", "", ["user"]),
        ("error", "", ["user"]),
    ],
)
async def test_a_reply_is_recorded_only_when_one_reached_the_user(
    outcome: Any, output: str, roles: list[str]
) -> None:
    store = MemoryUsageStore()
    recorder = UsageRecorder(store)
    await recorder(context(Profile(user_id="ada"), output=output, outcome=outcome))
    await recorder.flush(timeout_s=5)
    assert [e.role for e in await store.events("ada")] == roles


async def test_exposure_is_recorded_on_the_reply() -> None:
    store = MemoryUsageStore()
    recorder = UsageRecorder(store)
    ctx = context(Profile(user_id="ada"))
    ctx.exposure.parts.update({"style", "own_rules"})
    await recorder(ctx)
    await recorder.flush(timeout_s=5)
    user, reply = await store.events("ada")
    assert (user.exposure, reply.exposure) == (frozenset(), frozenset({"style", "own_rules"}))
    assert (user.tokens, reply.tokens) == (11, 7)


async def test_recorded_log_has_stable_keys_and_no_raw_id_or_text(store: UsageStore) -> None:
    """``usage.recorded`` is a debug event: logged at debug level, and not logged at info
    (conftest restores structlog's configuration after the test)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    recorder = UsageRecorder(store)
    with capture_logs() as quiet:
        await recorder(context(Profile(user_id="ada"), "hello"))
        await recorder.flush(timeout_s=5)
    assert not [e for e in quiet if e["event"] == "usage.recorded"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    with capture_logs() as logs:
        await recorder(context(Profile(user_id="ada.lovelace@example.com"), "my secret plan"))
        await recorder.flush(timeout_s=5)
    recorded = [e for e in logs if e["event"] == "usage.recorded"]
    assert [e["role"] for e in recorded] == ["user", "assistant"]
    for entry in recorded:
        assert {
            "user_hash", "request_id", "role", "ts", "tokens", "chars", "analysed", "cues",
            "relationship_score", "exposure", "minor",
        } <= set(entry)  # fmt: skip
        assert entry["user_hash"] == "h-r1" and entry["request_id"] == "r1"
    assert "ada.lovelace" not in str(logs) and "secret" not in str(logs)


async def test_queue_full_drops_the_newest_counts_and_logs_them(key_prefix: str) -> None:
    """With the store down, the buffer fills; the events that do not fit are dropped, counted
    and reported with their count, and the books balance."""
    recorder = UsageRecorder(unreachable_store(key_prefix), queue_size=10, **FAST)
    with capture_logs() as logs:
        for i in range(8):
            await recorder(context(Profile(user_id="ada"), request_id=f"r{i}"))
        await asyncio.sleep(0.05)
    counts = (recorder.produced, recorder.stored, recorder.dropped, recorder.pending)
    assert counts == (16, 0, 6, 10)
    assert books_balance(recorder)
    assert recorder.write_failures >= 1
    drops = [e for e in logs if e["event"] == "usage.dropped"]
    assert drops and drops[0]["reason"] == "queue_full"
    assert sum(e["count"] for e in drops) <= 6
    with capture_logs() as logs:
        await recorder.aclose(timeout_s=0.1)
    assert sum(e["count"] for e in drops + logs if e["event"] == "usage.dropped") == 6
    assert [e["pending"] for e in logs if e["event"] == "usage.unflushed"] == [10]


async def test_flush_on_close_loses_nothing(redis_url: str, key_prefix: str) -> None:
    """Many concurrent requests, then a graceful stop: every event is in Redis, none dropped."""
    store = RedisUsageStore(redis_url, prefix=key_prefix)
    recorder = UsageRecorder(store, batch_size=64)
    users = [f"user-{i % 7}" for i in range(300)]
    await asyncio.gather(
        *(recorder(context(Profile(user_id=u), request_id=f"r{n}")) for n, u in enumerate(users))
    )
    assert recorder.pending > 0  # nothing was written on the request path
    await recorder.aclose()
    check = RedisUsageStore(redis_url, prefix=key_prefix)
    total = sum([len(await check.events(u)) for u in await check.users()])
    await check.aclose()
    assert total == 600
    assert (recorder.produced, recorder.stored, recorder.dropped, recorder.pending) == (
        600,
        600,
        0,
        0,
    )


async def test_redis_outage_buffers_and_writes_after_it_comes_back(key_prefix: str) -> None:
    """Stop our own redis-server mid-run: events stay buffered and retried; once it is back they
    are all written, none dropped."""
    server = RedisServer()
    try:
        store = RedisUsageStore(server.url, prefix=key_prefix, socket_timeout=0.5)
        recorder = UsageRecorder(store, **FAST)
        await recorder(context(Profile(user_id="ada"), request_id="before"))
        assert await recorder.flush(timeout_s=5)
        server.stop()
        with capture_logs() as logs:
            for i in range(5):
                await recorder(context(Profile(user_id="ada"), request_id=f"during{i}"))
            assert not await recorder.flush(timeout_s=0.3)
        assert recorder.pending == 10 and recorder.write_failures >= 1
        assert any(e["event"] == "usage.write_failed" for e in logs)
        assert books_balance(recorder)
        server.start()  # same port, empty (no persistence): only the outage's events come back
        assert await recorder.flush(timeout_s=10)
        stored = await store.events("ada")
        assert sorted({e.request_id for e in stored}) == [f"during{i}" for i in range(5)]
        assert len(stored) == 10
        assert (recorder.stored, recorder.dropped, recorder.pending) == (12, 0, 0)
        await recorder.aclose()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.mark.parametrize(("linger_s", "at_most", "at_least"), [(0.2, 2, 1), (0.0, 40, 10)])
async def test_a_trickle_of_requests_is_written_in_few_batches(
    linger_s: float, at_most: int, at_least: int
) -> None:
    """Lingering lets a batch gather, so requests arriving one by one do not each pay for a
    write; without it, each request that finds the writer idle is a write of its own."""
    recorder = UsageRecorder(MemoryUsageStore(), linger_s=linger_s)
    for i in range(20):
        await recorder(context(Profile(user_id="ada"), request_id=f"r{i}"))
        await asyncio.sleep(0.001)
    assert await recorder.flush(timeout_s=5)
    assert recorder.stored == 40
    assert at_least <= recorder.writes <= at_most


async def test_writer_starts_lazily_and_leaves_no_task_behind() -> None:
    recorder = UsageRecorder(MemoryUsageStore())
    assert recorder.writer is None
    await recorder(context(Profile(user_id="ada")))
    task = recorder.writer
    assert task is not None and not task.done()
    await recorder.aclose()
    assert task.done() and recorder.writer is None
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "persona_mw.usage_recorder"]


async def test_after_close_events_are_dropped_and_counted() -> None:
    store = MemoryUsageStore()
    recorder = UsageRecorder(store)
    await recorder.aclose()
    with capture_logs() as logs:
        await recorder(context(Profile(user_id="ada")))
    assert (recorder.produced, recorder.dropped) == (2, 2)
    assert [(e["reason"], e["count"]) for e in logs if e["event"] == "usage.dropped"] == [
        ("closed", 2)
    ]
    assert await store.events("ada") == []


def test_one_recorder_across_event_loops_loses_nothing() -> None:
    """Sync callers (LangChain's ``invoke``) run each call in a fresh loop: the buffer outlives a
    loop and the next loop's writer drains it."""
    store = MemoryUsageStore()
    recorder = UsageRecorder(store)

    async def one(request_id: str) -> None:
        await recorder(context(Profile(user_id="ada"), request_id=request_id))

    asyncio.run(one("a"))  # the loop ends before its writer ran

    async def two_and_close() -> None:
        await one("b")
        await recorder.aclose()

    asyncio.run(two_and_close())
    assert recorder.stored == 4

    async def read() -> list[UsageEvent]:
        return await store.events("ada")

    assert sorted({e.request_id for e in asyncio.run(read())}) == ["a", "b"]


def record_on(loop: asyncio.AbstractEventLoop, recorder: UsageRecorder, request_id: str) -> None:
    """One request recorded from ``loop``: its writer starts there."""
    ctx = context(Profile(user_id="ada"), request_id=request_id)
    asyncio.run_coroutine_threadsafe(recorder(ctx), loop).result(timeout=5)


async def test_flush_and_close_from_another_loop_run_on_the_writers_loop(
    store: UsageStore,
) -> None:
    """Requests recorded on a loop that keeps running in another thread (a sync app's calls
    through LangChain), then flushed and closed from this one: no "attached to a different
    loop" error, nothing dropped, the writer stopped on its own loop and the store (whose
    connections belong to that loop) closed there."""
    recorder = UsageRecorder(store, linger_s=60)  # the writer holds a partial batch back
    with loop_in_thread() as (other, _):
        record_on(other, recorder, "r1")
        writer = recorder.writer
        assert writer is not None and writer.get_loop() is other
        assert recorder.pending == 2  # still buffered: only a flush writes it now
        assert await recorder.flush(timeout_s=5)
        assert (recorder.stored, recorder.pending) == (2, 0)
        record_on(other, recorder, "r2")
        assert recorder.pending == 2
        await recorder.aclose(timeout_s=5)
        assert writer.done() and recorder.writer is None
    assert (recorder.produced, recorder.stored, recorder.dropped, recorder.pending) == (4, 4, 0, 0)
    assert sorted({e.request_id for e in await store.events("ada")}) == ["r1", "r2"]


async def test_two_running_loops_share_one_writer_and_write_each_event_once() -> None:
    """A sync bridge's loop and the app's own loop both record (mixed sync and async use of
    one middleware): one writer, on the loop it started on; every event written exactly once."""
    store = MemoryUsageStore()
    recorder = UsageRecorder(store, linger_s=0.001, batch_size=16)
    writes: list[int] = []
    append = store.append

    async def counting(events: Any) -> None:
        writes.append(len(list(events)))
        await append(events)

    store.append = counting  # type: ignore[method-assign]
    with loop_in_thread() as (other, _):
        record_on(other, recorder, "first")
        writer = recorder.writer
        assert writer is not None

        async def there(n: int) -> None:
            for i in range(n):
                await recorder(context(Profile(user_id="ada"), request_id=f"t{i}"))

        pending = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(there(150), other))
        for i in range(150):
            await recorder(context(Profile(user_id="ada"), request_id=f"h{i}"))
        await pending
        assert recorder.writer is writer  # no second writer on this loop
        assert await recorder.flush(timeout_s=10)
        await recorder.aclose(timeout_s=5)
    assert (recorder.produced, recorder.stored, recorder.dropped) == (602, 602, 0)
    assert sum(writes) == 602  # none written twice
    assert len(await store.events("ada")) == 602


async def test_close_after_the_writers_loop_stopped_writes_from_this_loop() -> None:
    """The writer's loop has stopped with events still buffered (and its writer still pending
    there): closing from this loop writes them here, and leaves the old task to be cancelled
    should its loop ever run again."""
    store = MemoryUsageStore()
    recorder = UsageRecorder(store, linger_s=60)
    with loop_in_thread() as (other, thread):
        record_on(other, recorder, "r1")
        stale = recorder.writer
        assert stale is not None
        other.call_soon_threadsafe(other.stop)
        await asyncio.to_thread(thread.join, 5)
        assert not other.is_running()
        await recorder.aclose(timeout_s=5)
        assert (recorder.stored, recorder.dropped, recorder.pending) == (2, 0, 0)
        assert [e.role for e in await store.events("ada")] == ["user", "assistant"]
        assert not stale.done()
        await asyncio.to_thread(other.run_until_complete, asyncio.wait({stale}, timeout=5))
        assert stale.cancelled()


async def test_erase_from_another_loop_runs_on_the_writers_loop(store: UsageStore) -> None:
    """``Middleware.erase_user`` from the app's loop after sync calls: the queued events are
    written and then erased on the writer's loop, where a Redis store's connections belong;
    nothing of the user is left and the recorder goes on working."""
    recorder = UsageRecorder(store, linger_s=60)
    with loop_in_thread() as (other, _):
        for n in range(1, 4):  # again and again: a cross-loop read can succeed by luck
            record_on(other, recorder, f"r{n}")
            assert recorder.pending == 2
            assert (await recorder.erase("ada"))["events"] == 2
            assert (recorder.stored, recorder.pending) == (2 * n, 0)
            assert await store.events("ada") == []
        record_on(other, recorder, "last")
        await recorder.aclose(timeout_s=5)
    assert (recorder.produced, recorder.stored, recorder.dropped) == (8, 8, 0)
    assert {e.request_id for e in await store.events("ada")} == {"last"}


async def test_close_after_the_writers_loop_stopped_reconnects_redis_here(
    redis_url: str, key_prefix: str
) -> None:
    """The writer wrote to Redis on a loop that has since stopped, with more events buffered:
    the store's connections belong to that stopped loop, so closing from this one writes the
    rest over fresh connections instead of failing (and dropping) the batch."""
    store = RedisUsageStore(redis_url, prefix=key_prefix)
    recorder = UsageRecorder(store, linger_s=60)
    with loop_in_thread() as (other, thread):
        record_on(other, recorder, "r1")
        assert asyncio.run_coroutine_threadsafe(recorder.flush(5), other).result(timeout=5)
        record_on(other, recorder, "r2")
        other.call_soon_threadsafe(other.stop)
        await asyncio.to_thread(thread.join, 5)
        assert not other.is_running()
        await recorder.aclose(timeout_s=5)
    assert (recorder.produced, recorder.stored, recorder.dropped, recorder.pending) == (4, 4, 0, 0)
    check = RedisUsageStore(redis_url, prefix=key_prefix)
    try:
        assert sorted({e.request_id for e in await check.events("ada")}) == ["r1", "r2"]
    finally:
        await check.aclose()


async def test_erase_writes_the_queue_first_so_nothing_comes_back() -> None:
    """``Middleware.erase_user`` reaches the recorder; events still queued are written and then
    erased, so the writer cannot bring the user's data back afterwards."""
    store = MemoryUsageStore()
    recorder = UsageRecorder(store)
    mw = Middleware(finish_stages=[recorder])
    await recorder(context(Profile(user_id="ada")))
    await recorder(context(Profile(user_id="bob")))
    erased = await mw.erase_user("ada")
    assert erased["usage"]["events"] == 2
    await recorder.flush(timeout_s=5)
    assert await store.events("ada") == []
    assert await store.users() == ["bob"]


async def test_a_failing_detector_loses_the_flags_not_the_event() -> None:
    def broken(text: str, role: Literal["user", "assistant"]) -> Any:
        raise RuntimeError("detector bug")

    store = MemoryUsageStore()
    recorder = UsageRecorder(store, analyse=broken)
    with capture_logs() as logs:
        await recorder(context(Profile(user_id="ada", consent=Consent(text_analysis=True))))
        await recorder.flush(timeout_s=5)
    events = await store.events("ada")
    assert [e.analysed for e in events] == [False, False]
    assert [e["event"] for e in logs].count("usage.analyse_failed") == 2


class BuggyStore(MemoryUsageStore):
    """A deployer's own store with a bug: its first append raises something other than
    StoreError (which would mean "unreachable, retry")."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def append(self, events: Sequence[UsageEvent]) -> int:
        self.calls += 1
        if self.calls == 1:
            raise TypeError("bug in the store")
        return await super().append(events)


async def test_a_batch_that_hits_a_bug_is_dropped_not_retried_forever() -> None:
    """A non-StoreError is not an outage: retrying would wedge the queue, so the batch is
    dropped and counted with its reason, and the next batch is written."""
    store = BuggyStore()
    recorder = UsageRecorder(store)
    with capture_logs() as logs:
        await recorder(context(Profile(user_id="ada")))
        assert await recorder.flush(timeout_s=5)
        await recorder(context(Profile(user_id="bob")))
        assert await recorder.flush(timeout_s=5)
    assert (recorder.dropped, recorder.stored) == (2, 2) and books_balance(recorder)
    assert [(e["reason"], e["count"]) for e in logs if e["event"] == "usage.dropped"] == [
        ("write_error", 2)
    ]
    assert await store.users() == ["bob"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"queue_size": 1}, "queue_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"retry_initial_s": 0}, "retry_initial_s"),
        ({"retry_initial_s": 2, "retry_max_s": 1}, "retry_initial_s"),
    ],
)
def test_bad_settings_fail_at_start_up(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        UsageRecorder(MemoryUsageStore(), **kwargs)
    assert info.value.field == field
