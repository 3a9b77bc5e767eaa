"""Finding 6: every output field a user sees is checked — tool-call arguments (plain and
streamed; a redaction keeps them valid JSON, a block ends the call with content_filter),
``reasoning_content`` (filtered, or dropped by a setting) and logprobs (dropped whenever a
redaction or block happened in the choice)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from enforce_helpers import BLOCKED, CARD, call, middleware

from persona_mw.testing import FakeChoice, FakeOpenAIServer, FakeToolCall

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "pay",
            "parameters": {"type": "object", "properties": {"card": {"type": "string"}}},
        },
    }
]


async def _reply(upstream: FakeOpenAIServer, stream: bool, **settings: Any) -> dict[str, Any]:
    """One choice as the app gets it: content, reasoning, tool calls, logprobs, finish."""
    mw = middleware(**settings)
    kwargs = call(upstream, tools=TOOLS, logprobs=True)
    if not stream:
        response = await mw.acompletion(**kwargs)
        choice = response.choices[0]
        message = choice.message
        logprobs = getattr(choice, "logprobs", None)
        return {
            "content": message.content or "",
            "reasoning": getattr(message, "reasoning_content", None) or "",
            "tools": [(c.function.name, c.function.arguments) for c in (message.tool_calls or [])],
            "logprobs": [e.token for e in logprobs.content] if logprobs else [],
            "finish": choice.finish_reason,
        }
    out: dict[str, Any] = {"content": "", "reasoning": "", "tools": {}, "logprobs": []}
    async for chunk in mw.astream(**kwargs):
        for choice in chunk.choices:
            delta = choice.delta
            out["content"] += delta.content or ""
            out["reasoning"] += getattr(delta, "reasoning_content", None) or ""
            for c in delta.tool_calls or []:
                name, args = out["tools"].get(c.index, (None, ""))
                out["tools"][c.index] = (
                    name or c.function.name,
                    args + (c.function.arguments or ""),
                )
            if choice.logprobs:
                out["logprobs"] += [e.token for e in choice.logprobs.content]
            if choice.finish_reason:
                out["finish"] = choice.finish_reason
    out["tools"] = [out["tools"][i] for i in sorted(out["tools"])]
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_tool_call_arguments_are_redacted_and_stay_json(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    arguments = json.dumps({"card": CARD, "amount": 4111111111111111, "note": "ok"})
    upstream.set_reply(lambda _: FakeChoice(tool_calls=(FakeToolCall("pay", arguments),)))
    out = await _reply(upstream, stream)
    [(name, args)] = out["tools"]
    assert name == "pay"
    assert json.loads(args) == {
        "card": "[card removed]",
        "amount": "[card removed]",
        "note": "ok",
    }
    assert out["finish"] == "tool_calls"
    assert CARD.replace(" ", "") not in json.dumps(out) and CARD not in json.dumps(out)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_block_in_tool_call_arguments_ends_the_call(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    arguments = json.dumps({"text": "here is the secret method in full"})
    upstream.set_reply(lambda _: FakeChoice(tool_calls=(FakeToolCall("say", arguments),)))
    out = await _reply(upstream, stream)
    assert out["tools"] == []
    assert out["finish"] == "content_filter"
    assert out["content"] == BLOCKED
    assert "secret method" not in json.dumps(out)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_reasoning_content_is_filtered(upstream: FakeOpenAIServer, stream: bool) -> None:
    upstream.set_reply(
        lambda _: FakeChoice(content="The answer is 4.", reasoning=f"the user's card {CARD}")
    )
    out = await _reply(upstream, stream)
    assert out["reasoning"] == "the user's card [card removed]"
    assert out["content"] == "The answer is 4."


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_block_in_reasoning_ends_the_choice(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.set_reply(
        lambda _: FakeChoice(content="Fine.", reasoning="I will explain the secret method")
    )
    out = await _reply(upstream, stream)
    assert "secret method" not in json.dumps(out)
    assert out["finish"] == "content_filter"
    assert out["content"].endswith(BLOCKED)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_reasoning_content_can_be_dropped(upstream: FakeOpenAIServer, stream: bool) -> None:
    upstream.set_reply(lambda _: FakeChoice(content="Four.", reasoning="two plus two"))
    out = await _reply(upstream, stream, reasoning_content="drop")
    assert out["reasoning"] == ""
    assert out["content"] == "Four."


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_logprobs_are_dropped_after_a_redaction(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.set_reply(lambda _: FakeChoice(content=f"card {CARD} ok", logprobs=True))
    out = await _reply(upstream, stream)
    assert out["content"] == "card [card removed] ok"
    assert out["logprobs"] == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_logprobs_pass_when_nothing_was_withheld(
    upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.set_reply(lambda _: FakeChoice(content="nothing to see here", logprobs=True))
    out = await _reply(upstream, stream)
    assert "".join(out["logprobs"]) == "nothing to see here"


@pytest.mark.xfail(
    strict=True,
    reason="tool-call arguments are checked value by value: a card split across two JSON "
    "values is seen by neither (docs/security.md, Enforcement paths)",
)
async def test_a_card_split_across_two_argument_values_is_redacted(
    upstream: FakeOpenAIServer,
) -> None:
    arguments = json.dumps({"a": CARD[:9], "b": CARD[9:]})
    upstream.set_reply(lambda _: FakeChoice(tool_calls=(FakeToolCall("pay", arguments),)))
    out = await _reply(upstream, False)
    [(_, args)] = out["tools"]
    assert "".join(json.loads(args).values()) != CARD


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("sep", ["\u00a0", "\u202f", "\u2009", "\u2011"])
async def test_a_card_with_unicode_separators_is_redacted_in_every_field(
    upstream: FakeOpenAIServer, stream: bool, sep: str
) -> None:
    card = sep.join(CARD.split(" "))
    upstream.set_reply(
        lambda _: FakeChoice(
            content=f"card {card} here",
            reasoning=f"the card {card} is",
            tool_calls=(FakeToolCall("pay", json.dumps({"card": card}, ensure_ascii=False)),),
        )
    )
    out = await _reply(upstream, stream)
    assert "1111" not in json.dumps(out, ensure_ascii=False), out
