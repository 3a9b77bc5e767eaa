"""PersonaChatModel on the shared enforcement engine, against a real provider client (ChatOpenAI
→ FakeOpenAIServer): tool-call arguments are checked like the text (issue 12, finding 6), a JSON
reply and a reply of parts are checked by their text, and notices go beside a structured reply,
not into it (finding 10)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
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
SWEAR_MESSAGE = "Let's keep it polite."
SWEAR_RULE = {
    "id": "t.swear",
    "tier": 2,
    "detector": {"kind": "phrases", "phrases": ["darn"]},
    "action": "block",
    "message": SWEAR_MESSAGE,
}


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
async def bounded(tmp_path: Path) -> AsyncIterator[Middleware]:
    """A middleware with the pii pack (redacts) and a phrase that blocks, closed after the test."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": "t-1", "packs": ["pii"], "rules": [SWEAR_RULE]}))
    config = {"settings": {"hash_secret": "t"}, "bounds": {"policies": [str(path)]}}
    async with build_middleware(Config.model_validate(config)) as mw:
        yield mw


@pytest.fixture
def replies_with(upstream: FakeOpenAIServer) -> Iterator[Callable[[str], None]]:
    """Sets the text the upstream answers with; it echoes again after the test."""
    yield lambda content: upstream.set_reply(lambda request: FakeChoice(content=content))
    upstream.set_reply(echo_reply)


@pytest.fixture
async def noticed(recorder: Recorder) -> AsyncIterator[Middleware]:
    """The test stages, with a notice on every reply."""
    async with make_middleware(recorder, notice=NOTICE) as mw:
        yield mw


@pytest.mark.usefixtures("mail_tool_reply")
@pytest.mark.parametrize("mode", MODES)
async def test_tool_call_arguments_are_redacted_and_stay_valid(
    bounded: Middleware, upstream: FakeOpenAIServer, mode: str
) -> None:
    """An e-mail address in a tool call's arguments used to pass through the wrapper untouched
    (only text content was filtered). The engine checks each argument value: the address is
    masked, and the arguments still parse into the tool's fields."""
    chat = PersonaChatModel(inner=_openai(upstream), middleware=bounded).bind_tools([send_mail])
    reply = await _call(chat, mode, "mail bob")
    [call] = reply.tool_calls
    assert call["name"] == "send_mail"
    assert set(call["args"]) == {"to", "body"} and call["args"]["body"] == "hello"
    assert EMAIL not in json.dumps(call["args"]) and "removed" in call["args"]["to"]
    assert EMAIL not in json.dumps(reply.additional_kwargs)  # no raw copy of the arguments
    assert reply.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("mode", MODES)
async def test_a_json_mode_reply_is_checked_as_text(
    bounded: Middleware,
    upstream: FakeOpenAIServer,
    replies_with: Callable[[str], None],
    mode: str,
) -> None:
    """A reply asked for with ``response_format`` is the reply's text, and is checked as text
    (docs/langchain.md, "Limits, honestly"): a redaction lands inside the JSON, which still
    parses here; a block ends the reply with the rule's message, which does not parse, and the
    finish reason says so."""
    chat = PersonaChatModel(inner=_openai(upstream), middleware=bounded).bind(
        response_format={"type": "json_object"}
    )
    replies_with(json.dumps({"to": EMAIL}))
    redacted = await _call(chat, mode, "who gets it?")
    assert EMAIL not in str(redacted.content)
    assert "removed" in json.loads(str(redacted.content))["to"]

    replies_with(json.dumps({"note": "darn it"}))
    blocked = await _call(chat, mode, "how was it?")
    assert str(blocked.content).endswith(SWEAR_MESSAGE) and "darn" not in str(blocked.content)
    assert blocked.response_metadata["finish_reason"] == "content_filter"
    with pytest.raises(ValueError):
        json.loads(str(blocked.content))


async def test_a_reply_of_parts_is_checked_by_its_text(bounded: Middleware) -> None:
    """A content list (text beside an image) is checked by its text: kept as sent when no rule
    changes it; a redaction makes the content the checked text alone, without the image."""
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    as_sent: list[str | dict[str, Any]] = [{"type": "text", "text": "a cat"}, image]
    with_address: list[str | dict[str, Any]] = [{"type": "text", "text": f"ask {EMAIL}"}, image]
    inner = GenericFakeChatModel(
        messages=iter([AIMessage(content=as_sent), AIMessage(content=with_address)])
    )
    chat = PersonaChatModel(inner=inner, middleware=bounded)
    assert (await chat.ainvoke("a picture?", config=ADA)).content == as_sent
    redacted = (await chat.ainvoke("who to ask?", config=ADA)).content
    assert isinstance(redacted, str) and redacted.startswith("ask ") and EMAIL not in redacted


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
