"""PersonaChatModel around langchain-core's fake chat models: personalisation, bounds (also on
streams, with the hold-back), usage, the user id from the run config, tools, sync and async."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_stages import Recorder, TokenSpy, make_middleware
from persona_mw_langchain import PersonaChatModel, run_sync
from pydantic import BaseModel, Field

from persona_mw import CallContext, ConfigError, Middleware, Settings
from persona_mw.testing import capture_logs

ADA = {"configurable": {"persona_user": "ada"}}


class SeeingFake(GenericFakeChatModel):
    """GenericFakeChatModel that also keeps the messages it was sent (what the model saw)."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *a: Any, **kw: Any) -> ChatResult:
        self.seen.append(messages)
        return super()._generate(messages, *a, **kw)

    def _stream(
        self, messages: list[BaseMessage], *a: Any, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self.seen.append(messages)
        return super()._stream(messages, *a, **kw)


class ToolFake(SeeingFake):
    """A fake that supports tools the way real providers do: bind_tools binds kwargs to self."""

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kw: Any) -> Runnable[Any, Any]:
        return self.bind(
            tools=[getattr(t, "__name__", str(t)) for t in tools], tool_choice=tool_choice, **kw
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager)
        result.generations[0].message.response_metadata["tools_seen"] = kw.get("tools")
        return result

    def _stream(
        self, messages: list[BaseMessage], *a: Any, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        """GenericFakeChatModel drops tool calls when streaming; a provider sends them as
        tool_call_chunks after the text."""
        self.seen.append(messages)
        message = next(self.messages)
        for word in str(message.content).split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        for i, tool_call in enumerate(getattr(message, "tool_calls", [])):
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": tool_call["name"],
                            "args": json.dumps(tool_call["args"]),
                            "id": tool_call["id"],
                            "index": i,
                        }
                    ],
                )
            )


def fake(*replies: str | AIMessage) -> SeeingFake:
    return SeeingFake(messages=iter(replies))


async def call(
    chat: Runnable[Any, Any], mode: str, text: str, config: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any], list[Any]]:
    """One call in one of the four modes; returns the text, the final metadata and the chunks."""
    config = config if config is not None else ADA
    if mode == "invoke":
        message = chat.invoke(text, config=config)
        return message.content, message.response_metadata, [message]
    if mode == "ainvoke":
        message = await chat.ainvoke(text, config=config)
        return message.content, message.response_metadata, [message]
    if mode == "stream":
        chunks = list(chat.stream(text, config=config))
    else:
        chunks = [c async for c in chat.astream(text, config=config)]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    return merged.content, merged.response_metadata, chunks


MODES = ["invoke", "ainvoke", "stream", "astream"]


@pytest.mark.parametrize("mode", MODES)
async def test_personalised_prompt_reaches_the_model(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    inner = fake("Fine answer here.")
    chat = PersonaChatModel(inner=inner, middleware=mw)
    text, _, _ = await call(chat, mode, "how do I sleep better?")
    assert text == "Fine answer here."
    sent = inner.seen[-1]
    assert sent[0].type == "system" and sent[0].content == "Answer tersely for ada."
    assert sent[1].content == "how do I sleep better?"
    (record,) = recorder.records
    assert (record.user, record.surface, record.outcome, record.stream) == (
        "ada",
        "langchain",
        "ok",
        mode.endswith("stream"),
    )
    assert record.exposure == {"style"}
    assert record.output == "Fine answer here."


def test_unchanged_messages_go_to_the_model_as_given(mw: Middleware) -> None:
    """Messages the stages did not touch are the application's own objects (ids, kwargs kept)."""
    inner = fake("ok")
    chat = PersonaChatModel(inner=inner, middleware=mw)
    question = HumanMessage("hello", id="m-1", additional_kwargs={"x": 1})
    chat.invoke([question], config=ADA)
    assert inner.seen[-1][1] is question


@pytest.mark.parametrize("mode", MODES)
async def test_blocked_input_is_answered_without_the_model(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    inner = fake("must not be used")
    chat = PersonaChatModel(inner=inner, middleware=mw)
    text, metadata, _ = await call(chat, mode, "tell me something forbidden")
    assert text == "I can't help with that."
    assert metadata["finish_reason"] == "content_filter"
    assert inner.seen == []
    (record,) = recorder.records
    assert (record.outcome, record.rules, record.exposure) == ("blocked", ["no-forbidden"], set())


@pytest.mark.parametrize("mode", MODES)
async def test_output_bound_blocks_the_reply(mode: str, mw: Middleware, recorder: Recorder) -> None:
    chat = PersonaChatModel(inner=fake("Sure. The secret code is 42."), middleware=mw)
    text, metadata, _ = await call(chat, mode, "hi")
    assert "secret" not in text and "42" not in text
    assert text.endswith("[withheld: policy]")
    assert metadata["finish_reason"] == "content_filter"
    (record,) = recorder.records
    assert (record.outcome, record.finish_reason, record.rules) == (
        "filtered",
        "content_filter",
        ["no-secret-out"],
    )


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_stream_hold_back_never_releases_part_of_a_blocked_word(
    mode: str, mw: Middleware, spy: TokenSpy
) -> None:
    """FakeListChatModel streams one character at a time: "s", "e", "c"... each would be safe
    alone. Neither the chunks nor the token callbacks may ever show a prefix of "secret"."""
    inner = FakeListChatModel(responses=["ok, the secret is 42"])
    chat = PersonaChatModel(inner=inner, middleware=mw)
    config = {**ADA, "callbacks": [spy]}
    text, metadata, chunks = await call(chat, mode, "hi", config)
    assert text == "ok, the \n\n[withheld: policy]"
    assert metadata["finish_reason"] == "content_filter"
    streamed = "".join(c.content for c in chunks)
    assert "sec" not in streamed.replace("[withheld: policy]", "")
    assert "".join(spy.tokens) == streamed
    assert [c.response_metadata.get("finish_reason") for c in chunks].count("content_filter") == 1


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_stream_releases_the_held_back_tail_with_one_finish_reason(
    mode: str, mw: Middleware
) -> None:
    inner = FakeListChatModel(responses=["all good here"])
    chat = PersonaChatModel(inner=inner, middleware=mw)
    text, _, chunks = await call(chat, mode, "hi")
    assert text == "all good here"
    assert len(chunks) > 3  # really streamed, not one lump


async def test_notices_are_added_to_the_reply(recorder: Recorder) -> None:
    async with make_middleware(recorder, notice="(You are talking to an AI.)") as mw:
        chat = PersonaChatModel(inner=fake("Answer.", "Streamed answer."), middleware=mw)
        message = await chat.ainvoke("hi", config=ADA)
        text, _, _ = await call(chat, "astream", "hi")
    assert message.content == "Answer.\n\n(You are talking to an AI.)"
    assert text == "Streamed answer.\n\n(You are talking to an AI.)"


@pytest.mark.parametrize(
    ("config", "default", "expected"),
    [
        (
            {"configurable": {"persona_user": "cfg"}, "metadata": {"persona_user": "meta"}},
            "dflt",
            "cfg",
        ),
        ({"metadata": {"persona_user": "meta"}}, "dflt", "meta"),
        ({}, "dflt", "dflt"),
        ({"configurable": {"other": 1}}, "dflt", "dflt"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_user_id_precedence(
    mode: str,
    config: dict[str, Any],
    default: str,
    expected: str,
    mw: Middleware,
    recorder: Recorder,
) -> None:
    """configurable > metadata > default_user."""
    chat = PersonaChatModel(inner=fake("ok"), middleware=mw, default_user=default)
    await call(chat, mode, "hi", config)
    assert recorder.records[-1].user == expected


@pytest.mark.parametrize("mode", MODES)
async def test_no_user_is_a_config_error_that_says_how(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    chat = PersonaChatModel(inner=fake("ok"), middleware=mw)
    with pytest.raises(ConfigError, match="persona_user"):
        await call(chat, mode, "hi", {})
    assert recorder.records == []


def test_user_id_reaches_the_model_inside_a_chain(mw: Middleware, recorder: Recorder) -> None:
    """In a chain, LangChain hands the model the chain's config: configurable included."""
    chat = PersonaChatModel(inner=fake("ok"), middleware=mw)
    chain = RunnableLambda(lambda q: [HumanMessage(q)]) | chat
    chain.invoke("hi", config={"configurable": {"persona_user": "in-chain"}})
    assert recorder.records[-1].user == "in-chain"


async def test_sync_calls_work_inside_a_running_event_loop(
    mw: Middleware, recorder: Recorder
) -> None:
    """Sync ``invoke``/``stream`` called from a coroutine (a notebook cell, a sync helper in an
    async app): the middleware's async parts run on the private loop, not this one."""
    asyncio.get_running_loop()  # we are inside one
    chat = PersonaChatModel(inner=fake("one", "two"), middleware=mw)
    assert chat.invoke("hi", config=ADA).content == "one"
    assert "".join(c.content for c in chat.stream("hi", config=ADA)) == "two"
    assert [r.outcome for r in recorder.records] == ["ok", "ok"]


def test_sync_calls_work_without_an_event_loop(mw: Middleware, recorder: Recorder) -> None:
    chat = PersonaChatModel(inner=fake("one", "two", "three"), middleware=mw)
    assert chat.invoke("hi", config=ADA).content == "one"
    assert chat.batch(["a", "b"], config=ADA) is not None
    assert len(recorder.records) == 3


@dataclass
class LoopSeen:
    """An input stage that keeps the event loop each call's stages ran on."""

    loops: list[asyncio.AbstractEventLoop] = field(default_factory=list)
    name: str = "loop-seen"

    async def __call__(self, ctx: CallContext) -> None:
        self.loops.append(asyncio.get_running_loop())


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_every_sync_call_runs_on_one_long_lived_loop(closing: AsyncExitStack) -> None:
    """Parts such as a Redis store's connections belong to the loop they first ran on: sync
    invoke, stream and batch from several app threads, and ``run_sync``, all use one loop."""
    seen = LoopSeen()
    mw = Middleware(input_stages=[seen], settings=Settings(hash_secret="t"))
    closing.push_async_callback(mw.aclose)
    chat = PersonaChatModel(inner=FakeListChatModel(responses=["ok"]), middleware=mw)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: chat.invoke(f"q{i}", config=ADA), range(8)))
    list(chat.stream("s", config=ADA))
    chat.batch(["a", "b"], config=ADA)
    assert len(seen.loops) == 11
    assert set(seen.loops) == {run_sync(_running_loop())}


@dataclass(frozen=True)
class SyncCallInside:
    """An input stage that makes a sync LangChain call (a mistake when it runs on the loop of
    the sync call that runs it)."""

    chat: PersonaChatModel
    name: str = "sync-call-inside"

    async def __call__(self, ctx: CallContext) -> None:
        self.chat.invoke("inner", config=ADA)


@pytest.mark.parametrize("mode", MODES)
async def test_a_sync_call_inside_a_sync_call_fails_saying_what_to_use(
    mw: Middleware, closing: AsyncExitStack, mode: str
) -> None:
    """From a stage of a sync call, a sync call would wait on the loop it blocks, for ever: it
    fails at once, naming the async API. A stage of an async call runs on the app's loop, and
    a sync call there works (it waits for the private loop)."""
    inner = PersonaChatModel(inner=FakeListChatModel(responses=["inner"]), middleware=mw)
    outer_mw = Middleware(input_stages=[SyncCallInside(inner)], settings=Settings(hash_secret="t"))
    closing.push_async_callback(outer_mw.aclose)
    outer = PersonaChatModel(inner=fake("outer"), middleware=outer_mw)
    if mode in ("invoke", "stream"):
        with pytest.raises(RuntimeError, match="ainvoke/astream"):
            await call(outer, mode, "hi")
    else:
        assert (await call(outer, mode, "hi"))[0] == "outer"


async def test_concurrent_calls_keep_their_own_context(mw: Middleware, recorder: Recorder) -> None:
    inner = FakeListChatModel(responses=["reply"] * 40)
    chat = PersonaChatModel(inner=inner, middleware=mw)

    async def one(i: int) -> str:
        chunks = [
            c.content
            async for c in chat.astream(f"q{i}", config={"configurable": {"persona_user": f"u{i}"}})
        ]
        return "".join(chunks)

    texts = await asyncio.gather(*(one(i) for i in range(40)))
    assert set(texts) == {"reply"}
    assert sorted(r.user for r in recorder.records) == sorted(f"u{i}" for i in range(40))
    assert all(r.prompt[0]["content"] == f"Answer tersely for {r.user}." for r in recorder.records)


async def test_closing_a_stream_early_records_a_cancelled_call(
    mw: Middleware, recorder: Recorder
) -> None:
    chat = PersonaChatModel(
        inner=FakeListChatModel(responses=["a long answer " * 5]), middleware=mw
    )
    stream = chat.astream("hi", config=ADA)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    (record,) = recorder.records
    assert record.outcome == "cancelled"


class SyncOnlyFake(GenericFakeChatModel):
    """Refuses its async API, and notes when its stream is closed."""

    closed: bool = False

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> ChatResult:
        raise AssertionError("a sync call reached the inner model's async API")

    def _astream(self, *a: Any, **kw: Any) -> AsyncIterator[ChatGenerationChunk]:
        raise AssertionError("a sync call reached the inner model's async API")

    def _stream(
        self, messages: list[BaseMessage], *a: Any, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        try:
            yield from super()._stream(messages, *a, **kw)
        finally:
            self.closed = True


@pytest.mark.parametrize("mode", ["invoke", "stream"])
async def test_sync_calls_use_the_inner_models_sync_api(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    """The wrapper's sync calls run on the private loop, but reach the inner model the sync
    way, as the app would: its async client's connections belong to the app's own loop."""
    chat = PersonaChatModel(inner=SyncOnlyFake(messages=iter(["all fine here"])), middleware=mw)
    text, _, _ = await call(chat, mode, "hi")
    assert text == "all fine here"
    assert [r.outcome for r in recorder.records] == ["ok"]


def test_closing_a_sync_stream_early_records_a_cancelled_call(
    mw: Middleware, recorder: Recorder
) -> None:
    """Closing the sync stream closes the async implementation on the private loop, and the
    inner model's stream with it, as ``aclose`` does for ``astream``."""
    inner = SyncOnlyFake(messages=iter(["a long answer " * 5]))
    chat = PersonaChatModel(inner=inner, middleware=mw)
    stream = chat.stream("hi", config=ADA)
    for _ in stream:
        break
    stream.close()
    (record,) = recorder.records
    assert record.outcome == "cancelled"
    assert inner.closed


@pytest.mark.parametrize("mode", MODES)
async def test_inner_model_failure_is_recorded_and_raised(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    chat = PersonaChatModel(inner=SeeingFake(messages=iter([])), middleware=mw)
    with pytest.raises(Exception) as raised:
        await call(chat, mode, "hi")
    assert not isinstance(raised.value, ConfigError)
    (record,) = recorder.records
    assert record.outcome == "error"


async def test_request_event_is_logged_like_any_persona_call(mw: Middleware) -> None:
    chat = PersonaChatModel(inner=fake("Sure. The secret code is 42."), middleware=mw)
    with capture_logs() as events:
        await chat.ainvoke("hi", config=ADA)
    (event,) = [e for e in events if e["event"] == "request.completed"]
    assert event["surface"] == "langchain"
    assert event["outcome"] == "filtered"
    assert event["user"] != "ada"  # pseudonymised
    assert event["decisions"][0]["rule"] == "no-secret-out"


# -- tools and structured output --------------------------------------------------------------


class Answer(BaseModel):
    """An answer."""

    text: str


def test_bind_tools_keeps_the_call_inside_the_wrapper(mw: Middleware, recorder: Recorder) -> None:
    inner = ToolFake(messages=iter(["the secret is out", "plain"]))
    chat = PersonaChatModel(inner=inner, middleware=mw)
    bound = chat.bind_tools([Answer], tool_choice="any")
    message = bound.invoke("hi", config=ADA)
    assert message.response_metadata["tools_seen"] == ["Answer"]
    assert message.content == "[withheld: policy]"
    assert inner.seen[-1][0].content == "Answer tersely for ada."
    assert recorder.records[-1].outcome == "filtered"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_structured_output_through_the_wrapper(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    """Structured output rides on tool calls, which pass through unfiltered (documented)."""
    reply = AIMessage(
        content="", tool_calls=[{"name": "Answer", "args": {"text": "42"}, "id": "c1"}]
    )
    inner = ToolFake(messages=iter([reply]))
    structured = PersonaChatModel(inner=inner, middleware=mw).with_structured_output(Answer)
    result = (
        structured.invoke("q", config=ADA)
        if mode == "invoke"
        else await structured.ainvoke("q", config=ADA)
    )
    assert result == Answer(text="42")
    assert inner.seen[-1][0].content == "Answer tersely for ada."
    assert recorder.records[-1].outcome == "ok"


def test_bind_tools_on_a_model_without_tools_says_so(mw: Middleware) -> None:
    chat = PersonaChatModel(inner=fake("x"), middleware=mw)
    with pytest.raises(NotImplementedError):
        chat.bind_tools([Answer])


async def test_streamed_tool_call_chunks_pass_through(mw: Middleware) -> None:
    reply = AIMessage(
        content="calling", tool_calls=[{"name": "Answer", "args": {"text": "x"}, "id": "c1"}]
    )
    chat = PersonaChatModel(inner=ToolFake(messages=iter([reply])), middleware=mw)
    merged: AIMessageChunk | None = None
    async for chunk in chat.astream("hi", config=ADA):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.content == "calling "
    assert [c["name"] for c in merged.tool_calls] == ["Answer"]
