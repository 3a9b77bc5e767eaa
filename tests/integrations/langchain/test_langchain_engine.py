"""PersonaChatModel on the shared enforcement engine, against a real provider client (ChatOpenAI
→ FakeOpenAIServer): tool-call arguments are checked like the text (issue 12, finding 6), and
notices go beside a structured reply, not into it (finding 10)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI
from langchain_stages import Recorder, make_middleware
from persona_mw_langchain import PersonaChatModel

from persona_mw import Config, Middleware, build_middleware
from persona_mw.testing import FakeChoice, FakeOpenAIServer, FakeToolCall, echo_reply

MODES = ["invoke", "ainvoke", "stream", "astream"]
ADA = {"configurable": {"persona_user": "ada"}}
EMAIL = "bob.smith@example.com"
NOTICE = "You are talking to an AI."


def send_mail(to: str, body: str) -> str:
    """Send an e-mail."""
    return "sent"


@pytest.fixture
def mail_tool_reply(upstream: FakeOpenAIServer) -> Iterator[None]:
    arguments = json.dumps({"to": EMAIL, "body": "hello"})
    upstream.set_reply(
        lambda request: FakeChoice(tool_calls=(FakeToolCall("send_mail", arguments),))
    )
    yield
    upstream.set_reply(echo_reply)


def _openai(upstream: FakeOpenAIServer) -> ChatOpenAI:
    """A client of its own: langchain-openai shares one async HTTP pool per process, whose
    connections would outlive the event loop of the test that opened them."""
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=upstream.base_url,
        api_key="test-key",
        max_retries=0,
        http_async_client=httpx.AsyncClient(),
    )


async def _call(chat: Any, mode: str, text: str) -> AIMessage | AIMessageChunk:
    if mode == "invoke":
        return chat.invoke(text, config=ADA)  # type: ignore[no-any-return]
    if mode == "ainvoke":
        return await chat.ainvoke(text, config=ADA)  # type: ignore[no-any-return]
    chunks = (
        list(chat.stream(text, config=ADA))
        if mode == "stream"
        else [c async for c in chat.astream(text, config=ADA)]
    )
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged  # type: ignore[no-any-return]


@pytest.fixture
async def pii(tmp_path: Path) -> AsyncIterator[Middleware]:
    """A middleware with the pii pack, closed after the test."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": "t-1", "packs": ["pii"]}))
    config = {"settings": {"hash_secret": "t"}, "bounds": {"policies": [str(path)]}}
    async with build_middleware(Config.model_validate(config)) as mw:
        yield mw


@pytest.fixture
async def noticed(recorder: Recorder) -> AsyncIterator[Middleware]:
    """The test stages, with a notice on every reply."""
    async with make_middleware(recorder, notice=NOTICE) as mw:
        yield mw


@pytest.mark.usefixtures("mail_tool_reply")
@pytest.mark.parametrize("mode", MODES)
async def test_tool_call_arguments_are_redacted_and_stay_valid(
    pii: Middleware, upstream: FakeOpenAIServer, mode: str
) -> None:
    """An e-mail address in a tool call's arguments used to pass through the wrapper untouched
    (only text content was filtered). The engine checks each argument value: the address is
    masked, and the arguments still parse into the tool's fields."""
    chat = PersonaChatModel(inner=_openai(upstream), middleware=pii).bind_tools([send_mail])
    reply = await _call(chat, mode, "mail bob")
    [call] = reply.tool_calls
    assert call["name"] == "send_mail"
    assert set(call["args"]) == {"to", "body"} and call["args"]["body"] == "hello"
    assert EMAIL not in json.dumps(call["args"]) and "removed" in call["args"]["to"]
    assert EMAIL not in json.dumps(reply.additional_kwargs)  # no raw copy of the arguments
    assert reply.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("mode", MODES)
async def test_notices_go_beside_a_tool_calling_reply(
    upstream: FakeOpenAIServer, noticed: Middleware, recorder: Recorder, mode: str
) -> None:
    """With tools bound, a notice in the content would corrupt what the app parses: it goes to
    ``response_metadata["persona_notices"]`` (once, even merged from a stream), and the content
    is the model's own."""
    chat = PersonaChatModel(inner=_openai(upstream), middleware=noticed).bind_tools([send_mail])
    reply = await _call(chat, mode, "just say hi")
    assert reply.content == "echo: just say hi"
    assert reply.response_metadata["persona_notices"] == [
        {"text": NOTICE, "source": "test-notice", "position": "after"}
    ]
    assert recorder.records[-1].output == "echo: just say hi"


@pytest.mark.parametrize("mode", MODES)
async def test_notices_frame_a_plain_reply(
    upstream: FakeOpenAIServer, noticed: Middleware, mode: str
) -> None:
    chat = PersonaChatModel(inner=_openai(upstream), middleware=noticed)
    reply = await _call(chat, mode, "hi")
    assert reply.content == f"echo: hi\n\n{NOTICE}"
    assert "persona_notices" not in reply.response_metadata
