"""Finding 3: every choice is checked, with one filter per choice index, plain and streamed."""

from __future__ import annotations

import pytest
from enforce_helpers import BLOCKED, CARD, call, middleware

from persona_mw.testing import FakeChoice, FakeOpenAIServer


async def test_a_second_choice_is_checked(upstream: FakeOpenAIServer) -> None:
    """Choice 1 of ``n=2`` used to come back unfiltered: its card must be redacted and its
    blocked text withheld, each choice with its own verdict."""
    upstream.set_reply(
        lambda _: [
            FakeChoice(content="all good here"),
            FakeChoice(content=f"card {CARD} and the secret method is x"),
        ]
    )
    mw = middleware()
    response = await mw.acompletion(**call(upstream, n=2))
    first, second = response.choices
    assert first.message.content == "all good here"
    assert first.finish_reason == "stop"
    assert CARD not in second.message.content
    assert second.message.content == BLOCKED
    assert second.finish_reason == "content_filter"


async def test_a_second_choice_is_redacted_alone(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(
        lambda _: [FakeChoice(content="plain"), FakeChoice(content=f"pay with {CARD} now")]
    )
    response = await middleware().acompletion(**call(upstream, n=2))
    assert response.choices[0].message.content == "plain"
    assert response.choices[1].message.content == "pay with [card removed] now"


async def _streamed(mw_kwargs: dict[str, object], upstream: FakeOpenAIServer) -> dict[int, str]:
    mw = middleware()
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    async for chunk in mw.astream(**call(upstream, n=2, **mw_kwargs)):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    return {i: f"{texts[i]}|{finish.get(i)}" for i in texts}


async def test_streamed_choices_are_filtered_apart(upstream: FakeOpenAIServer) -> None:
    """The stream interleaves choice 0 and choice 1 chunk by chunk. One merged filter sees a
    card split by the other choice's letters and lets it through; one filter per choice
    index sees each card whole."""
    upstream.set_reply(
        lambda _: [FakeChoice(content=f"one {CARD} end"), FakeChoice(content="abcdefghijklmnop")]
    )
    out = await _streamed({}, upstream)
    assert out == {0: "one [card removed] end|stop", 1: "abcdefghijklmnop|stop"}


@pytest.mark.parametrize("blocked", [0, 1])
async def test_a_block_ends_only_its_own_choice_when_streamed(
    upstream: FakeOpenAIServer, blocked: int
) -> None:
    texts = ["the secret method is this", "a harmless answer"]
    if blocked:
        texts.reverse()
    upstream.set_reply(lambda _: [FakeChoice(content=t) for t in texts])
    out = await _streamed({}, upstream)
    # A stream releases the clean text before a block as it arrives (it holds back only what
    # could still become a match), then ends that choice with the rule's message.
    released, _, ending = out[blocked].rpartition(BLOCKED)
    assert ending == "|content_filter"
    assert "the secret method".startswith(released.rstrip("\n"))
    assert "secret" not in released
    assert out[1 - blocked] == "a harmless answer|stop"
