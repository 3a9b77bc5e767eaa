"""The pipeline end to end: real LiteLLM, against mock responses and a real local HTTP upstream.

The stages here are tiny but real implementations of the stage protocols: they test the
pipeline's contract (order, short-circuit, hold-back, finish on failure), not any policy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from persona_mw import (
    CallContext,
    ConfigError,
    Decision,
    MemoryProfileStore,
    Middleware,
    Notice,
    Profile,
    Settings,
    UpstreamError,
    UpstreamTimeout,
)
from persona_mw.enforce import block_message, blocked_ending, with_notices
from persona_mw.testing import FakeOpenAIServer, Fault, capture_logs
from persona_mw.types import Span

MODEL = "openai/fake"


class Recorder:
    """Input stage that notes the order it ran in and what it saw."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def __call__(self, ctx: CallContext) -> None:
        self.seen.append(f"{self.name}:{ctx.profile.own_rules or '-'}")


class AddSystem:
    name = "add-system"

    async def __call__(self, ctx: CallContext) -> None:
        ctx.prompt_messages = [
            {"role": "system", "content": f"rules: {ctx.profile.own_rules}"},
            *ctx.messages,
        ]
        ctx.exposure.parts.add("own_rules")


class BlockWord:
    name = "block-word"

    async def __call__(self, ctx: CallContext) -> None:
        if "forbidden" in ctx.user_text():
            ctx.decisions.append(
                Decision("t.block", 2, "input", "phrase", "block", message="Not here.")
            )
            ctx.reply, ctx.reply_finish_reason = "Not here.", "content_filter"


class Notify:
    name = "notify"

    async def __call__(self, ctx: CallContext) -> None:
        ctx.notices.append(Notice("[AI notice]", "t.disclosure", position="before"))
        ctx.notices.append(Notice("[take a break]", "t.break", position="after"))


class StopOnSecret:
    """Output stage: holds back len("secret")-1 chars; stops before "secret"."""

    name = "stop-on-secret"

    def open(self, ctx: CallContext) -> _SecretFilter:
        return _SecretFilter(ctx)


class _SecretFilter:
    def __init__(self, ctx: CallContext) -> None:
        self.ctx, self.buffer, self.stopped = ctx, "", False

    def feed(self, text: str) -> str:
        self.buffer += text
        at = self.buffer.find("secret")
        if at >= 0:
            self.stopped = True
            self.ctx.decisions.append(
                Decision("t.secret", 1, "output", "phrase", "block", message="[withheld]")
            )
            return self.buffer[:at]
        keep = len("secret") - 1
        out, self.buffer = self.buffer[:-keep], self.buffer[-keep:]
        return out

    def finish(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []

    async def __call__(self, ctx: CallContext) -> None:
        self.contexts.append(ctx)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server


def _kw(server: FakeOpenAIServer) -> dict[str, str]:
    return {"api_base": server.base_url, "api_key": "test-key"}


async def _store(*profiles: Profile) -> MemoryProfileStore:
    store = MemoryProfileStore()
    for profile in profiles:
        await store.put(profile)
    return store


async def test_plain_call_returns_litellm_response(upstream: FakeOpenAIServer) -> None:
    from litellm import ModelResponse

    mw = Middleware()
    response = await mw.acompletion(
        user="ada", model=MODEL, messages=[{"role": "user", "content": "hi"}], **_kw(upstream)
    )
    assert isinstance(response, ModelResponse)
    assert response.choices[0].message.content == "echo: hi"
    assert upstream.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_id_names_the_call_and_is_not_sent_to_the_model(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    collect = Collect()
    mw = Middleware(finish_stages=[collect])
    call: dict[str, Any] = {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "request_id": "req-42",
        **_kw(upstream),
    }
    if stream:
        async for _ in mw.astream(**call):
            pass
    else:
        await mw.acompletion(**call)
    [ctx] = collect.contexts
    assert ctx.request_id == "req-42"
    assert "request_id" not in ctx.llm_kwargs
    assert "request_id" not in upstream.requests[-1]


async def test_stages_run_in_order_and_rewrite_reaches_the_model(
    upstream: FakeOpenAIServer,
) -> None:
    seen: list[str] = []
    mw = Middleware(
        store=await _store(Profile(user_id="ada", own_rules="cite sources")),
        input_stages=[Recorder("a", seen), AddSystem(), Recorder("b", seen)],
    )
    messages = [{"role": "user", "content": "hi"}]
    await mw.acompletion(user="ada", model=MODEL, messages=messages, **_kw(upstream))
    assert seen == ["a:cite sources", "b:cite sources"]
    assert upstream.requests[-1]["messages"][0] == {
        "role": "system",
        "content": "rules: cite sources",
    }
    assert messages == [{"role": "user", "content": "hi"}], (
        "the caller's messages are never modified"
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_input_block_answers_without_the_model(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    collect = Collect()
    mw = Middleware(input_stages=[BlockWord(), AddSystem()], finish_stages=[collect])
    call = {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": "a forbidden thing"}],
        **_kw(upstream),
    }
    if stream:
        chunks = [c async for c in mw.astream(**call)]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        response = await mw.acompletion(**call)
        text, finish = response.choices[0].message.content, response.choices[0].finish_reason
    assert (text, finish) == ("Not here.", "content_filter")
    assert upstream.requests == []
    assert collect.contexts[0].outcome == "blocked"
    assert (
        "prompt" not in collect.contexts[0].timings_ms
        and "add-system" not in collect.contexts[0].timings_ms
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_notices_frame_the_reply(upstream: FakeOpenAIServer, stream: bool) -> None:
    mw = Middleware(input_stages=[Notify()])
    call = {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        **_kw(upstream),
    }
    if stream:
        text = "".join([c.choices[0].delta.content or "" async for c in mw.astream(**call)])
    else:
        text = (await mw.acompletion(**call)).choices[0].message.content
    assert text == "[AI notice]\n\necho: hi\n\n[take a break]"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
async def test_streamed_output_never_leaks_a_blocked_phrase(chunk_size: int) -> None:
    """Whatever the chunking, no prefix of "secret" beyond what precedes it reaches the client."""
    reply = "the password is secret and more"
    collect = Collect()
    mw = Middleware(output_stages=[StopOnSecret()], finish_stages=[collect])
    with FakeOpenAIServer(reply=lambda _: reply, chunk_size=chunk_size) as server:
        chunks = [
            c
            async for c in mw.astream(
                user="ada", model=MODEL, messages=[{"role": "user", "content": "?"}], **_kw(server)
            )
        ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "the password is \n\n[withheld]"
    assert "secr" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert collect.contexts[0].outcome == "filtered"


async def test_a_block_before_any_text_is_only_the_rule_message() -> None:
    """Nothing was released before the stop, so the stream ends as the whole reply does: the
    rule's message with no blank line in front of it."""
    mw = Middleware(output_stages=[StopOnSecret()])
    with FakeOpenAIServer(reply=lambda _: "secret first", chunk_size=4) as server:
        chunks = [
            c
            async for c in mw.astream(
                user="ada", model=MODEL, messages=[{"role": "user", "content": "?"}], **_kw(server)
            )
        ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "[withheld]"
    assert chunks[-1].choices[0].finish_reason == "content_filter"


async def test_a_block_after_a_before_notice_reads_as_the_whole_reply_does() -> None:
    """The AI disclosure, then a block before any text: one blank line between them, streamed
    exactly as the plain reply reads."""
    mw = Middleware(input_stages=[Notify()], output_stages=[StopOnSecret()])
    ask = {"user": "ada", "model": MODEL, "messages": [{"role": "user", "content": "?"}]}
    with FakeOpenAIServer(reply=lambda _: "secret first", chunk_size=4) as server:
        chunks = [c async for c in mw.astream(**ask, **_kw(server))]
        plain = await mw.acompletion(**ask, **_kw(server))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == plain.choices[0].message.content
    assert streamed.startswith("[AI notice]\n\n[withheld]")


async def test_non_streamed_block_replaces_the_reply() -> None:
    mw = Middleware(output_stages=[StopOnSecret()])
    response = await mw.acompletion(
        user="ada",
        model=MODEL,
        messages=[{"role": "user", "content": "?"}],
        mock_response="a secret here",
    )
    assert response.choices[0].message.content == "[withheld]"
    assert response.choices[0].finish_reason == "content_filter"


async def test_stream_passes_text_through_unchanged(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(lambda _: "hello there, general")
    mw = Middleware(output_stages=[StopOnSecret()])
    chunks = [
        c
        async for c in mw.astream(
            user="u", model=MODEL, messages=[{"role": "user", "content": "x"}], **_kw(upstream)
        )
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hello there, general"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_usage_chunk_is_passed_through(upstream: FakeOpenAIServer) -> None:
    collect = Collect()
    mw = Middleware(finish_stages=[collect])
    chunks = [
        c
        async for c in mw.astream(
            user="u",
            model=MODEL,
            messages=[{"role": "user", "content": "count me"}],
            stream_options={"include_usage": True},
            **_kw(upstream),
        )
    ]
    assert any(getattr(c, "usage", None) for c in chunks)
    assert collect.contexts[0].completion_tokens == len("echo: count me") // 4


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (Fault(status=500, times=5), UpstreamError, 500),
        (Fault(status=429, times=5), UpstreamError, 429),
        (Fault(delay=2.0, times=5), UpstreamTimeout, None),
    ],
)
async def test_upstream_failures_become_typed_errors(
    upstream: FakeOpenAIServer, fault: Fault, error: type, status: int | None
) -> None:
    collect = Collect()
    mw = Middleware(finish_stages=[collect])
    upstream.inject(fault)
    with pytest.raises(error) as info:
        await mw.acompletion(
            user="u",
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            timeout=0.5,
            num_retries=0,
            **_kw(upstream),
        )
    if status is not None:
        assert info.value.status_code == status
    assert "openai/fake" in str(info.value)
    assert collect.contexts[0].outcome == "error", "a failed call is still recorded"


async def test_cancellation_propagates_records_and_leaks_no_task(
    upstream: FakeOpenAIServer,
) -> None:
    collect = Collect()
    mw = Middleware(finish_stages=[collect])
    upstream.inject(Fault(delay=1.0))
    before = asyncio.all_tasks()
    task = asyncio.create_task(
        mw.acompletion(
            user="u", model=MODEL, messages=[{"role": "user", "content": "x"}], **_kw(upstream)
        )
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert collect.contexts[0].outcome == "cancelled"
    await asyncio.sleep(0.05)
    leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not leaked, leaked


async def test_closing_a_stream_early_records_usage(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(lambda _: "word " * 200)
    collect = Collect()
    mw = Middleware(finish_stages=[collect])
    stream = mw.astream(
        user="u", model=MODEL, messages=[{"role": "user", "content": "x"}], **_kw(upstream)
    )
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert collect.contexts[0].outcome == "cancelled"


async def test_one_failing_request_does_not_affect_others(upstream: FakeOpenAIServer) -> None:
    mw = Middleware()
    upstream.inject(Fault(status=500, times=1))
    results = await asyncio.gather(
        *(
            mw.acompletion(
                user=f"u{i}",
                model=MODEL,
                messages=[{"role": "user", "content": str(i)}],
                num_retries=0,
                **_kw(upstream),
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1 and isinstance(failures[0], UpstreamError)
    for i, result in enumerate(results):
        if not isinstance(result, Exception):
            assert result.choices[0].message.content == f"echo: {i}"


async def test_log_event_is_private_by_default(upstream: FakeOpenAIServer) -> None:
    mw = Middleware(settings=Settings(hash_secret="s3cret"), input_stages=[AddSystem()])
    with capture_logs() as logs:
        await mw.acompletion(
            user="alice@example.com",
            model=MODEL,
            messages=[{"role": "user", "content": "my diary"}],
            **_kw(upstream),
        )
    events = [e for e in logs if e["event"] == "request.completed"]
    assert len(events) == 1
    event = events[0]
    dumped = json.dumps(event)
    assert "alice" not in dumped and "diary" not in dumped
    assert event["user"] == mw.hash_user("alice@example.com") and len(event["user"]) == 16
    assert event["model"] == MODEL and event["outcome"] == "ok"
    assert {"profile", "add-system", "model", "output", "total"} <= set(event["timings_ms"])
    assert event["prompt_tokens"] > 0 and event["completion_tokens"] > 0
    assert event["exposure"] == ["own_rules"]


async def test_log_text_only_when_turned_on(upstream: FakeOpenAIServer) -> None:
    mw = Middleware(settings=Settings(log_message_text=True))
    with capture_logs() as logs:
        await mw.acompletion(
            user="alice",
            model=MODEL,
            messages=[{"role": "user", "content": "my diary"}],
            **_kw(upstream),
        )
    event = next(e for e in logs if e["event"] == "request.completed")
    assert "my diary" in json.dumps(event["messages"]) and event["output"] == "echo: my diary"


def test_hash_is_keyed() -> None:
    a = Middleware(settings=Settings(hash_secret="one")).hash_user("alice")
    b = Middleware(settings=Settings(hash_secret="two")).hash_user("alice")
    assert a != b


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"user": "", "model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "user"),
        ({"user": "u", "model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"user": "u", "model": MODEL, "messages": []}, "messages"),
        ({"user": "u", "model": MODEL, "messages": [{"content": "no role"}]}, "messages"),
    ],
)
async def test_bad_calls_name_the_argument(call: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        await Middleware().acompletion(**call, mock_response="x")
    assert info.value.field == field


async def test_unknown_user_gets_default_profile() -> None:
    collect = Collect()
    mw = Middleware(
        finish_stages=[collect], settings=Settings(default_profile={"style": {"language": "es"}})
    )
    await mw.acompletion(
        user="new", model=MODEL, messages=[{"role": "user", "content": "x"}], mock_response="ok"
    )
    ctx = collect.contexts[0]
    assert (
        ctx.profile_source == "default"
        and ctx.profile.style.language == "es"
        and ctx.profile.user_id == "new"
    )


async def test_failing_finish_stage_is_logged_not_raised() -> None:
    class Broken:
        name = "broken"

        async def __call__(self, ctx: CallContext) -> None:
            raise RuntimeError("disk full")

    mw = Middleware(finish_stages=[Broken()])
    with capture_logs() as logs:
        response = await mw.acompletion(
            user="u", model=MODEL, messages=[{"role": "user", "content": "x"}], mock_response="fine"
        )
    assert response.choices[0].message.content == "fine"
    assert any(e["event"] == "stage.failed" and e["stage"] == "broken" for e in logs)


async def test_erase_user_removes_profile_and_stage_data() -> None:
    class Keeps:
        name = "keeps"

        def __init__(self) -> None:
            self.data = {"grace": 3, "bob": 1}

        async def __call__(self, ctx: CallContext) -> None:
            return None

        async def erase(self, user_id: str) -> int:
            return self.data.pop(user_id, 0)

        async def usage_report(self, user_id: str) -> dict[str, int]:
            return {"messages": self.data.get(user_id, 0)}

    keeps = Keeps()
    mw = Middleware(
        store=await _store(Profile(user_id="grace")), input_stages=[keeps], finish_stages=[keeps]
    )
    assert await mw.usage_report("grace") == {"keeps": {"messages": 3}}
    with capture_logs() as logs:
        assert await mw.erase_user("grace") == {"profile": True, "keeps": 3}
    assert keeps.data == {"bob": 1}
    assert await mw.store.get("grace") is None
    # "grace": letters no hex digest (the hashed id, a request id) can hold by chance
    assert [e["event"] for e in logs] == ["user.erased"] and "grace" not in str(logs)


class Snapshot:
    """Finish stage that copies what the context holds when the finish stages run (a change
    made to the context afterwards does not show here)."""

    name = "snapshot"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, ctx: CallContext) -> None:
        self.seen.append(
            {
                "outcome": ctx.outcome,
                "output": ctx.output_text,
                "completion_tokens": ctx.completion_tokens,
                "timings": set(ctx.timings_ms),
            }
        )


async def test_a_stream_closed_early_is_accounted_before_the_finish_stages(
    upstream: FakeOpenAIServer,
) -> None:
    """The usage recorder sees the text already sent, its tokens and the model timing: the
    stream's bookkeeping is done when the client closes it, not later when a generator is
    garbage-collected."""
    upstream.set_reply(lambda _: "word " * 200)
    snapshot = Snapshot()
    mw = Middleware(finish_stages=[snapshot])
    stream = mw.astream(
        user="u", model=MODEL, messages=[{"role": "user", "content": "x"}], **_kw(upstream)
    )
    sent = ""
    async for chunk in stream:
        sent += chunk.choices[0].delta.content or ""
        if sent:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    [seen] = snapshot.seen
    assert seen["outcome"] == "cancelled"
    assert seen["output"] == sent and seen["completion_tokens"] > 0
    assert {"first_token", "model", "output"} <= seen["timings"]


# -- the output steps as an integration drives them (the LiteLLM proxy plugin) -----------------


async def _answered_context(mw: Middleware, text: str, *, stream: bool) -> CallContext:
    ctx = await mw.begin(
        "ada", MODEL, [{"role": "user", "content": text}], {}, stream=stream, surface="test"
    )
    await mw.run_input_stages(ctx)
    return ctx


async def test_enforce_stream_over_a_stream_the_host_opened(upstream: FakeOpenAIServer) -> None:
    """The proxy plugin hands enforce_stream the proxy's own stream: the same notices,
    hold-back and block as astream; the step closes that stream when it blocks (stopping the
    upstream call); without ``model_started`` it records no model timings (the host made the
    call, and only the host knows when)."""
    upstream.set_reply(lambda _: "the password is secret and more")
    mw = Middleware(input_stages=[Notify()], output_stages=[StopOnSecret()])
    ctx = await _answered_context(mw, "?", stream=True)
    closed: list[bool] = []

    async def opened_by_host() -> AsyncIterator[Any]:
        try:
            async for piece in mw.llm.astream(
                model=MODEL, messages=ctx.prompt_messages, **_kw(upstream)
            ):
                yield piece
        finally:
            closed.append(True)

    chunks = [c async for c in mw.enforce_stream(ctx, opened_by_host())]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "[AI notice]\n\nthe password is \n\n[withheld]\n\n[take a break]"
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert closed == [True], "the blocked stream is closed at once, not when collected"
    assert (ctx.outcome, ctx.finish_reason, ctx.output_text) == ("filtered", "content_filter", text)
    assert "output" in ctx.timings_ms and not {"first_token", "model"} & set(ctx.timings_ms)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_replayed_answer_to_a_blocked_input_is_passed_on_as_it_is(stream: bool) -> None:
    """The proxy plugin answers a blocked input through LiteLLM's ``mock_response`` and hands
    that reply to enforce_reply / enforce_stream: its notices are not added twice, it ends with
    the input rule's finish_reason, and it counts no tokens although LiteLLM invents some."""
    import litellm

    mw = Middleware(input_stages=[Notify(), BlockWord()])
    ctx = await _answered_context(mw, "a forbidden thing", stream=stream)
    answer = with_notices(ctx, "Not here.")
    call: dict[str, Any] = {"model": MODEL, "messages": ctx.messages, "mock_response": answer}
    if stream:
        host = await litellm.acompletion(
            **call, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in mw.enforce_stream(ctx, host)]
        choices = [c.choices[0] for c in chunks if c.choices]
        text = "".join(choice.delta.content or "" for choice in choices)
        finish = [choice.finish_reason for choice in choices if choice.finish_reason]
        usages = [c.usage for c in chunks if getattr(c, "usage", None) is not None]
    else:
        response = await mw.enforce_reply(ctx, await litellm.acompletion(**call))
        text = response.choices[0].message.content
        finish = [response.choices[0].finish_reason]
        usages = [response.usage]
    assert text == answer == "[AI notice]\n\nNot here.\n\n[take a break]"
    assert finish == ["content_filter"]
    assert usages and all(u.total_tokens == 0 for u in usages)
    assert (ctx.output_text, ctx.finish_reason) == (answer, "content_filter")
    assert (ctx.outcome, ctx.prompt_tokens, ctx.completion_tokens) == ("blocked", 0, 0)


async def test_block_message_names_the_first_blocking_rule_and_notices_frame_the_reply() -> None:
    ctx = await _answered_context(Middleware(input_stages=[Notify()]), "hi", stream=False)
    assert block_message(ctx) == "[response withheld by a content policy]"
    ctx.decisions += [
        Decision("a", 1, "output", "d", "block", message="A"),
        Decision("b", 2, "output", "d", "redact"),
    ]
    assert block_message(ctx) == "A"
    # two blocks on one reply: the one a stream meets first, whatever order they were recorded
    kept = list(ctx.decisions)
    ctx.decisions[:] = [
        Decision("late", 1, "output", "d", "block", spans=(Span(40, 50, "x"),), message="L"),
        Decision("early", 2, "output", "d", "block", spans=(Span(5, 9, "x"),), message="E"),
    ]
    assert block_message(ctx) == "E"
    ctx.decisions[:] = kept
    assert blocked_ending(ctx, "") == "A\n\n[take a break]"  # blocked before any text
    assert blocked_ending(ctx, "so far") == "\n\nA\n\n[take a break]"
    assert blocked_ending(ctx, "[AI notice]\n\n") == "A\n\n[take a break]"  # no second blank
    assert with_notices(ctx, "body") == "[AI notice]\n\nbody\n\n[take a break]"


async def test_aclose_closes_every_stage_once_finish_stages_first() -> None:
    closed: list[str] = []

    class Closing:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __call__(self, ctx: CallContext) -> None:
            return None

        async def aclose(self) -> None:
            closed.append(self.name)

    class Failing(Closing):
        async def aclose(self) -> None:
            raise RuntimeError("cannot close")

    both, recorder, other = Closing("both"), Closing("recorder"), Closing("other")
    mw = Middleware(input_stages=[other, both], finish_stages=[recorder, Failing("bad"), both])
    with capture_logs() as logs:
        await mw.aclose()
    assert closed == ["recorder", "both", "other"]  # the failing one did not stop the rest
    assert [(e["event"], e["part"]) for e in logs] == [("middleware.close_failed", "bad")]


def test_rules_that_redact_are_named_by_the_middleware() -> None:
    """What a host that cannot change text (a LangChain callback) must refuse: the rules that
    redact, or that a user may set to redact (an adjustable option offering it), across the
    bounds stages, each named once; rules with other actions are not listed."""
    from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict

    policy = policy_from_dict(
        {
            "version": "t",
            "rules": [
                {
                    "id": "t.card",
                    "tier": 1,
                    "stage": "both",
                    "detector": {"kind": "pii"},
                    "action": "redact",
                },
                {
                    "id": "t.words",
                    "tier": 2,
                    "stage": "output",
                    "detector": {"kind": "phrases", "phrases": ["darn"]},
                    "action": "log",
                    "adjustable": {"values": ["log", "redact"]},
                },
                {
                    "id": "t.block",
                    "tier": 1,
                    "stage": "output",
                    "detector": {"kind": "phrases", "phrases": ["secret method"]},
                    "action": "block",
                    "message": "Withheld.",
                },
            ],
        }
    )
    mw = Middleware(
        input_stages=[BoundsInputStage(policy=policy)],
        output_stages=[BoundsOutputStage(policy=policy)],
    )
    assert mw.rules_that("redact") == ["t.card", "t.words"]
    assert mw.rules_that("block") == ["t.block"]
    assert Middleware().rules_that("redact") == []
