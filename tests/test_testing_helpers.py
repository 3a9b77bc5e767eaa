"""persona_mw.testing's in-process helpers: MockLLM (only the remote model replaced, LiteLLM's
own response objects) and make_context (the per-call context a stage is given)."""

from __future__ import annotations

from typing import Any

import pytest

from persona_mw import Middleware, UpstreamError
from persona_mw.personalise import PersonaliseStage
from persona_mw.testing import MockLLM, make_context


def _user_text(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


async def test_mock_llm_answers_through_the_middleware_and_keeps_each_request() -> None:
    llm = MockLLM(lambda request: "reply to " + _user_text(request))
    mw = Middleware(llm=llm, input_stages=[PersonaliseStage()])
    await mw.store.put(
        make_context(
            "ada", profile={"consent": {"personalisation": True}, "style": {"tone": "playful"}}
        ).profile
    )
    response = await mw.acompletion(
        user="ada", model="any-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert response.choices[0].message.content == "reply to hi"
    (request,) = llm.requests
    assert request["model"] == "any-model"
    assert request["messages"][0]["role"] == "system"  # the personalised prompt, as sent
    assert "playful" in request["messages"][0]["content"]


async def test_mock_llm_streams_in_litellm_chunks() -> None:
    mw = Middleware(llm=MockLLM(lambda request: "one two three"))
    pieces = [
        chunk.choices[0].delta.content or ""
        async for chunk in mw.astream(
            user="bo", model="openai/x", messages=[{"role": "user", "content": "go"}]
        )
    ]
    assert len(pieces) > 1 and "".join(pieces) == "one two three"


async def test_a_handler_exception_reaches_the_caller_as_an_upstream_error() -> None:
    mw = Middleware(llm=MockLLM(lambda request: RuntimeError("provider down")))
    with pytest.raises(UpstreamError, match="provider down"):
        await mw.acompletion(user="cy", model="m", messages=[{"role": "user", "content": "x"}])


async def test_make_context_gives_a_stage_what_the_middleware_would() -> None:
    ctx = make_context(
        "dee", profile={"consent": {"personalisation": True}, "style": {"tone": "formal"}}
    )
    assert ctx.user_id == "dee" and ctx.profile.style.tone == "formal"
    assert ctx.prompt_messages == ctx.messages and ctx.prompt_messages is not ctx.messages
    await PersonaliseStage()(ctx)
    assert (
        ctx.prompt_messages[0]["role"] == "system" and "formal" in ctx.prompt_messages[0]["content"]
    )
    assert ctx.messages == [{"role": "user", "content": "hello"}]  # the caller's, untouched
    assert make_context().request_id != make_context().request_id
