"""ChatLiteLLM and ChatOpenAI, over real HTTP to a local OpenAI-style server (FakeOpenAIServer):
the wrapper and the handlers, sync and async, streamed and not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_litellm import ChatLiteLLM
from langchain_openai import ChatOpenAI
from langchain_stages import Recorder
from persona_mw_langchain import (
    PersonaCallbackHandler,
    PersonaChatModel,
    PersonaSyncCallbackHandler,
)
from pydantic import BaseModel

from persona_mw import BoundsError, InputBlocked, Middleware
from persona_mw.testing import FakeOpenAIServer, Fault

ADA = {"configurable": {"persona_user": "ada"}}


def litellm_model(server: FakeOpenAIServer) -> BaseChatModel:
    return ChatLiteLLM(model="openai/fake", api_base=server.base_url, api_key="test")


def openai_model(server: FakeOpenAIServer) -> BaseChatModel:
    """Its own async HTTP client: langchain-openai shares one per process by default, and its
    pooled connections belong to the event loop of the test that opened them."""
    return ChatOpenAI(
        model="fake",
        base_url=server.base_url,
        api_key="test",
        stream_usage=True,  # type: ignore[arg-type]
        http_async_client=openai.DefaultAsyncHttpxClient(),
    )


PROVIDERS: list[Callable[[FakeOpenAIServer], BaseChatModel]] = [litellm_model, openai_model]
MODES = ["invoke", "ainvoke", "stream", "astream"]


async def call(
    model: Any, mode: str, text: str, config: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    if mode == "invoke":
        message = model.invoke(text, config=config)
        return message.content, message.response_metadata
    if mode == "ainvoke":
        message = await model.ainvoke(text, config=config)
        return message.content, message.response_metadata
    chunks = (
        list(model.stream(text, config=config))
        if mode == "stream"
        else [c async for c in model.astream(text, config=config)]
    )
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged.content, merged.response_metadata


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrapper_personalises_over_http(
    provider: Callable[[FakeOpenAIServer], BaseChatModel],
    mode: str,
    upstream: FakeOpenAIServer,
    mw: Middleware,
    recorder: Recorder,
) -> None:
    chat = PersonaChatModel(inner=provider(upstream), middleware=mw)
    text, metadata = await call(chat, mode, "how do I sleep?", ADA)
    assert text == "echo: how do I sleep?"
    assert metadata["finish_reason"] == "stop"
    sent = upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Answer tersely for ada."}
    assert upstream.requests[-1].get("stream", False) == mode.endswith("stream")
    (record,) = recorder.records
    assert (record.outcome, record.finish_reason, record.output) == ("ok", "stop", text)
    assert record.completion_tokens > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrapper_bounds_the_reply_over_http(
    provider: Callable[[FakeOpenAIServer], BaseChatModel],
    mode: str,
    upstream: FakeOpenAIServer,
    mw: Middleware,
    recorder: Recorder,
) -> None:
    """The echo carries "secret" back, split over 3-character SSE chunks ("sec", "ret")."""
    chat = PersonaChatModel(inner=provider(upstream), middleware=mw)
    text, metadata = await call(chat, mode, "what is the secret?", ADA)
    assert "secret" not in text and "sec" not in text.replace("[withheld: policy]", "")
    assert text.endswith("[withheld: policy]")
    assert metadata["finish_reason"] == "content_filter"
    assert recorder.records[-1].outcome == "filtered"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrapper_blocked_input_never_reaches_the_server(
    provider: Callable[[FakeOpenAIServer], BaseChatModel],
    mode: str,
    upstream: FakeOpenAIServer,
    mw: Middleware,
) -> None:
    before = len(upstream.requests)
    chat = PersonaChatModel(inner=provider(upstream), middleware=mw)
    text, metadata = await call(chat, mode, "forbidden question", ADA)
    assert (text, metadata["finish_reason"]) == ("I can't help with that.", "content_filter")
    assert len(upstream.requests) == before


class Weather(BaseModel):
    """Look up the weather."""

    city: str


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrapper_bind_tools_sends_the_tools(
    provider: Callable[[FakeOpenAIServer], BaseChatModel],
    upstream: FakeOpenAIServer,
    mw: Middleware,
) -> None:
    chat = PersonaChatModel(inner=provider(upstream), middleware=mw).bind_tools([Weather])
    message = await chat.ainvoke("weather in Paris?", config=ADA)
    assert message.content == "echo: weather in Paris?"
    request = upstream.requests[-1]
    assert [t["function"]["name"] for t in request["tools"]] == ["Weather"]
    assert request["messages"][0]["content"] == "Answer tersely for ada."


@pytest.mark.parametrize("provider", PROVIDERS)
def test_wrapper_sync_stream_hands_over_chunks_while_the_provider_still_sends(
    provider: Callable[[FakeOpenAIServer], BaseChatModel], mw: Middleware, recorder: Recorder
) -> None:
    """A sync ``stream`` drives the async implementation on the private loop chunk by chunk.
    The provider waits between its 100 chunks (5 s in all), so a stream that gathered the
    reply first could yield nothing before the provider had sent it all; stopping early then
    hangs up on the provider and is recorded as cancelled."""
    pieces = 100
    with FakeOpenAIServer(reply=lambda _: "word " * pieces, chunk_size=5) as server:
        server.inject(Fault(chunk_delay=0.05))
        chat = PersonaChatModel(inner=provider(server), middleware=mw)
        stream = chat.stream("hi", config=ADA)
        first = next(chunk for chunk in stream if chunk.content)
        sent = server.chunks_sent
        stream.close()
    assert first.content.startswith("word")
    assert sent < pieces
    assert [r.outcome for r in recorder.records] == ["cancelled"]


HANDLER_CASES = [
    ("ainvoke", PersonaCallbackHandler),
    ("astream", PersonaCallbackHandler),
    ("invoke", PersonaSyncCallbackHandler),
    ("stream", PersonaSyncCallbackHandler),
]


@pytest.mark.parametrize(("mode", "cls"), HANDLER_CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_handler_over_http(
    provider: Callable[[FakeOpenAIServer], BaseChatModel],
    mode: str,
    cls: type[PersonaCallbackHandler | PersonaSyncCallbackHandler],
    upstream: FakeOpenAIServer,
    mw: Middleware,
    recorder: Recorder,
) -> None:
    model = provider(upstream)
    config = {"callbacks": [cls(mw)], "metadata": {"persona_user": "ada"}}
    text, _ = await call(model, mode, "hello", config)
    assert text == "echo: hello"
    assert recorder.records[-1].outcome == "ok"
    assert recorder.records[-1].completion_tokens > 0

    before = len(upstream.requests)
    with pytest.raises(InputBlocked):
        await call(model, mode, "forbidden", config)
    assert len(upstream.requests) == before

    with pytest.raises(BoundsError):
        await call(model, mode, "the secret", config)
    assert [r.outcome for r in recorder.records] == ["ok", "blocked", "filtered"]
