"""Finding 10: notices (AI disclosure, reminders, crisis resources) must not corrupt a
structured reply. With ``response_format`` or tools they travel out of band, on
``persona_notices``; a plain-text reply still carries them in its text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from enforce_helpers import MODEL
from prometheus_client import CollectorRegistry

from persona_mw import Middleware, Settings
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.bounds.policy import AIDisclosure
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.metrics import SignalsMetrics
from persona_mw.signals.stage import DependenceStage
from persona_mw.signals.usage_store import MemoryUsageStore
from persona_mw.testing import FakeChoice, FakeOpenAIServer, FakeToolCall

ANSWER = '{"answer": 4}'
DISCLOSURE = AIDisclosure().text
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}},
    },
}


def _middleware(**settings: Any) -> Middleware:
    """Bounds with the ai-disclosure pack (all users) and the real dependence stage, which shows
    the disclosure on a user's first call of the day."""
    policy = policy_from_dict({"version": "t", "packs": ["ai-disclosure", "pii"]})
    return Middleware(
        input_stages=[
            BoundsInputStage(policy=policy),
            DependenceStage(
                MemoryUsageStore(),
                config=SignalsConfig(),
                metrics=SignalsMetrics(CollectorRegistry()),
            ),
        ],
        output_stages=[BoundsOutputStage(policy=policy)],
        settings=Settings(**settings),
    )


def _call(upstream: FakeOpenAIServer, **kwargs: Any) -> dict[str, Any]:
    return {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": "what is 2+2?"}],
        "api_base": upstream.base_url,
        "api_key": "test",
        **kwargs,
    }


@pytest.mark.parametrize("response_format", [{"type": "json_object"}, SCHEMA])
async def test_a_json_reply_parses_on_the_first_call_of_the_day(
    upstream: FakeOpenAIServer, response_format: dict[str, Any]
) -> None:
    upstream.set_reply(lambda _: ANSWER)
    response = await _middleware().acompletion(**_call(upstream, response_format=response_format))
    assert json.loads(response.choices[0].message.content) == {"answer": 4}
    assert [n["text"] for n in response.persona_notices] == [DISCLOSURE]
    assert response.persona_notices[0]["source"] == "signals.ai_disclosure"


async def test_a_streamed_json_reply_parses_and_carries_the_notices(
    upstream: FakeOpenAIServer,
) -> None:
    upstream.set_reply(lambda _: ANSWER)
    chunks = [
        c
        async for c in _middleware().astream(
            **_call(upstream, response_format={"type": "json_object"})
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": 4}
    assert [n["text"] for n in chunks[0].persona_notices] == [DISCLOSURE]
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert [n["text"] for n in last.persona_notices] == [DISCLOSURE]


async def test_tool_calls_carry_no_notice_in_their_content(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(lambda _: FakeChoice(tool_calls=(FakeToolCall("add", '{"a": 2}'),)))
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    response = await _middleware().acompletion(**_call(upstream, tools=tools))
    message = response.choices[0].message
    assert message.content is None
    assert json.loads(message.tool_calls[0].function.arguments) == {"a": 2}
    assert [n["text"] for n in response.persona_notices] == [DISCLOSURE]


async def test_plain_text_keeps_the_notice_in_the_reply(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(lambda _: "Four.")
    response = await _middleware().acompletion(**_call(upstream))
    assert response.choices[0].message.content == f"{DISCLOSURE}\n\nFour."
    assert getattr(response, "persona_notices", None) is None


async def test_a_setting_moves_every_notice_out_of_band(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(lambda _: "Four.")
    response = await _middleware(notices="out_of_band").acompletion(**_call(upstream))
    assert response.choices[0].message.content == "Four."
    assert [n["text"] for n in response.persona_notices] == [DISCLOSURE]
