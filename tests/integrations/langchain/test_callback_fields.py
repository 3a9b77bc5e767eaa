"""The callback handlers on fields other than the content: a block in tool-call arguments (or
in ``reasoning_content``) aborts the call, streamed or not, as a block in the text does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langchain_stages import Recorder
from test_langchain_callbacks import CASES, Handler

from persona_mw import Middleware, OutputBlocked
from persona_mw.testing import FakeChoice, FakeOpenAIServer, FakeToolCall, echo_reply


def _model(message: AIMessage) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([message]))


async def _run(model: Any, mode: str, handler: Handler) -> Any:
    config: dict[str, Any] = {"callbacks": [handler], "metadata": {"persona_user": "ada"}}
    if mode == "invoke":
        return model.invoke("hi", config=config)
    if mode == "ainvoke":
        return await model.ainvoke("hi", config=config)
    if mode == "stream":
        return list(model.stream("hi", config=config))
    return [c async for c in model.astream("hi", config=config)]


@pytest.fixture
def secret_tool_reply(upstream: FakeOpenAIServer) -> Iterator[None]:
    arguments = json.dumps({"text": "the secret is 42"})
    upstream.set_reply(
        lambda request: FakeChoice(
            content="posting it now", tool_calls=(FakeToolCall("post", arguments),)
        )
    )
    yield
    upstream.set_reply(echo_reply)


@pytest.mark.parametrize(("mode", "cls"), CASES)
@pytest.mark.usefixtures("secret_tool_reply")
async def test_a_block_in_tool_call_arguments_aborts_the_call(
    mode: str, cls: type[Handler], mw: Middleware, recorder: Recorder, upstream: FakeOpenAIServer
) -> None:
    """ChatOpenAI against a real local upstream that streams text, then the arguments split
    over chunks. Streamed, the arguments come as tool-call chunks, never as tokens: the handler
    must still check them (whole) when the reply ends."""
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=upstream.base_url,
        api_key="test-key",
        max_retries=0,
        http_async_client=httpx.AsyncClient(),
    )
    with pytest.raises(OutputBlocked) as raised:
        await _run(model, mode, cls(mw))
    assert raised.value.rule_id == "no-secret-out"
    (record,) = recorder.records
    assert (record.outcome, record.finish_reason) == ("filtered", "content_filter")


@pytest.mark.parametrize(("mode", "cls"), CASES)
async def test_a_block_in_reasoning_aborts_the_call(
    mode: str, cls: type[Handler], mw: Middleware, recorder: Recorder
) -> None:
    message = AIMessage(content="fine", additional_kwargs={"reasoning_content": "the secret is 42"})
    with pytest.raises(OutputBlocked) as raised:
        await _run(_model(message), mode, cls(mw))
    assert raised.value.rule_id == "no-secret-out"
