"""PersonaAgentMiddleware in a real ``langchain`` 1.x agent (create_agent, LangGraph): every
model call personalised and bounded, streaming included (``stream_mode="messages"``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_stages import Recorder
from persona_mw_langchain.agents import PersonaAgentMiddleware

from persona_mw import Middleware
from persona_mw.signals import MemoryUsageStore, UsageRecorder

QUESTION = {"messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Context:
    persona_user: str


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_agent_model_calls_are_personalised_and_bounded(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    model = FakeListChatModel(responses=["the secret is 42"])
    agent = create_agent(model, tools=[], middleware=[PersonaAgentMiddleware(mw)])
    config: Any = {"configurable": {"persona_user": "ada"}}
    out = (
        agent.invoke(QUESTION, config=config)
        if mode == "invoke"
        else await agent.ainvoke(QUESTION, config=config)
    )
    reply = out["messages"][-1]
    assert reply.content == "[withheld: policy]"
    assert reply.response_metadata["finish_reason"] == "content_filter"
    (record,) = recorder.records
    assert (record.user, record.outcome) == ("ada", "filtered")
    assert record.prompt[0] == {"role": "system", "content": "Answer tersely for ada."}


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_agent_streaming_does_not_bypass_the_bounds(
    mode: str, mw: Middleware, recorder: Recorder
) -> None:
    """LangGraph's message stream is fed from the model's token callbacks: it must show only
    what the hold-back released, never the characters of "secret" as they arrive."""
    model = FakeListChatModel(responses=["ok, the secret is 42"])
    agent = create_agent(model, tools=[], middleware=[PersonaAgentMiddleware(mw)])
    config: Any = {"configurable": {"persona_user": "ada"}}
    if mode == "stream":
        parts = [
            m.content for m, _ in agent.stream(QUESTION, config=config, stream_mode="messages")
        ]
    else:
        parts = [
            m.content
            async for m, _ in agent.astream(QUESTION, config=config, stream_mode="messages")
        ]
    streamed = "".join(parts)
    assert streamed == "ok, the \n\n[withheld: policy]"
    assert len(parts) > 3  # it really streamed
    assert recorder.records[-1].outcome == "filtered"


async def test_agent_user_from_runtime_context(mw: Middleware, recorder: Recorder) -> None:
    model = FakeListChatModel(responses=["fine"])
    agent = create_agent(
        model, tools=[], middleware=[PersonaAgentMiddleware(mw)], context_schema=Context
    )
    await agent.ainvoke(QUESTION, context=Context(persona_user="ctx-user"))
    assert recorder.records[-1].user == "ctx-user"
    assert recorder.records[-1].outcome == "ok"


async def test_agent_blocked_input_never_reaches_the_model(
    mw: Middleware, recorder: Recorder
) -> None:
    model = FakeListChatModel(responses=["must not be used"])
    agent = create_agent(
        model, tools=[], middleware=[PersonaAgentMiddleware(mw, default_user="ada")]
    )
    out = await agent.ainvoke({"messages": [{"role": "user", "content": "forbidden"}]})
    assert out["messages"][-1].content == "I can't help with that."
    assert model.i == 0  # FakeListChatModel's cursor: not called
    assert recorder.records[-1].outcome == "blocked"


def test_a_sync_agent_app_closes_through_the_agent_middleware() -> None:
    """``agent.invoke`` runs the middleware on the private sync loop; the agent middleware's
    ``close()`` writes the buffered usage and stops the usage writer there."""
    recorder = UsageRecorder(MemoryUsageStore())
    persona = PersonaAgentMiddleware(Middleware(finish_stages=[recorder]), default_user="ada")
    agent = create_agent(FakeListChatModel(responses=["hi"]), tools=[], middleware=[persona])
    agent.invoke(QUESTION)
    persona.close()
    assert (recorder.stored, recorder.dropped, recorder.pending) == (2, 0, 0)
    assert recorder.writer is None
