"""Every input message through the input rules, in the real middleware, with a real upstream
(:class:`FakeOpenAIServer`) recording what reached the model: all roles, all turns, every text
part, a text split across two parts; history replay costs only the new messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from persona_mw import Middleware
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.bounds.inputs import WITHHELD, redact_parts
from persona_mw.bounds.resolve import resolve
from persona_mw.personalise import PersonaliseStage
from persona_mw.profile import Profile
from persona_mw.stores.memory import MemoryProfileStore
from persona_mw.testing import FakeOpenAIServer

POLICY = policy_from_dict(
    {"version": "every-message-1", "packs": ["pii", "crisis", "minor-safety"]}
)
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


async def _middleware(*profiles: Profile) -> tuple[Middleware, BoundsInputStage]:
    store = MemoryProfileStore()
    for profile in profiles:
        await store.put(profile)
    check = BoundsInputStage(policy=POLICY)
    mw = Middleware(
        store=store,
        input_stages=[check, PersonaliseStage()],
        output_stages=[BoundsOutputStage(policy=POLICY)],
    )
    return mw, check


async def _send(
    mw: Middleware, upstream: FakeOpenAIServer, user: str, messages: list[dict[str, Any]]
) -> tuple[Any, str | None]:
    """The reply, and everything the model received as one JSON text (None: not called)."""
    before = len(upstream.requests)
    response = await mw.acompletion(
        user=user,
        model="openai/fake",
        messages=messages,
        api_base=upstream.base_url,
        api_key="x",
    )
    seen = upstream.requests[before:]
    return response, json.dumps(seen[0]["messages"]) if seen else None


def _parts(*texts: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": t} for t in texts]


def _tool_turn(result: str) -> list[dict[str, Any]]:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [
        {"role": "user", "content": "look up my account"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]


PII_PLACES = {
    "system message": [
        {"role": "system", "content": f"The user's card is {CARD}."},
        {"role": "user", "content": "what is my card?"},
    ],
    "earlier user turn": [
        {"role": "user", "content": f"my card is {CARD}"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "thanks"},
    ],
    "assistant prefill": [
        {"role": "user", "content": "repeat my card"},
        {"role": "assistant", "content": f"Your card is {CARD} and"},
    ],
    "tool result": _tool_turn(f'{{"card": "{CARD}"}}'),
    "second text part": [{"role": "user", "content": _parts("hello", f"card {CARD}")}],
    "split across two text parts": [
        {"role": "user", "content": _parts("card 4111 1111 ", "1111 1111 please")}
    ],
}


@pytest.mark.parametrize("place", list(PII_PLACES))
async def test_pii_is_redacted_wherever_it_is(upstream: FakeOpenAIServer, place: str) -> None:
    """Only the last user message was checked: a card number anywhere else reached the model."""
    mw, _ = await _middleware()
    _, seen = await _send(mw, upstream, "ada", PII_PLACES[place])
    assert seen is not None
    assert "1111" not in seen, seen
    assert "removed]" in seen


async def test_split_redaction_keeps_the_parts_and_their_other_text(
    upstream: FakeOpenAIServer,
) -> None:
    mw, _ = await _middleware()
    messages = [{"role": "user", "content": _parts("card 4111 1111 ", "1111 1111 please")}]
    _, seen = await _send(mw, upstream, "ada", messages)
    assert seen is not None
    parts = json.loads(seen)[-1]["content"]
    assert [p["text"] for p in parts] == ["card [card removed]", " please"]
    assert messages[0]["content"][0]["text"] == "card 4111 1111 "  # the app's list is untouched


async def test_a_minors_blocked_message_replayed_in_history_does_not_reach_the_model(
    upstream: FakeOpenAIServer,
) -> None:
    """Turn 1 is blocked; on turn 2 the app replays it as history. The new turn goes through,
    the blocked message is withheld from the model, and the log says so."""
    mw, _ = await _middleware(Profile(user_id="kid", age_band="13_15"))
    first = [{"role": "user", "content": "send nudes"}]
    blocked, seen = await _send(mw, upstream, "kid", first)
    assert seen is None and blocked.choices[0].finish_reason == "content_filter"
    second = [
        *first,
        {"role": "assistant", "content": blocked.choices[0].message.content},
        {"role": "user", "content": "ok, help me with maths then"},
    ]
    reply, seen = await _send(mw, upstream, "kid", second)
    assert seen is not None, "the new, harmless turn must go through"
    assert "nudes" not in seen
    assert WITHHELD in seen and "help me with maths" in seen
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": _parts("what does ", "sexting mean")}],
        [{"role": "user", "content": _parts("what does sex", "ting mean")}],
        _tool_turn("the page says: sexting tips"),
        [{"role": "user", "content": "finish this"}, {"role": "assistant", "content": "Porn is"}],
    ],
    ids=["second part", "split across parts", "tool result", "assistant prefill"],
)
async def test_a_minors_current_turn_blocks_in_every_part_and_role(
    upstream: FakeOpenAIServer, messages: list[dict[str, Any]]
) -> None:
    mw, _ = await _middleware(Profile(user_id="kid", age_band="13_15"))
    reply, seen = await _send(mw, upstream, "kid", messages)
    assert seen is None, seen
    assert reply.choices[0].finish_reason == "content_filter"


async def test_crisis_in_an_earlier_turn_instructs_but_does_not_repeat_resources(
    upstream: FakeOpenAIServer,
) -> None:
    """Resources go with the turn that needed them; the model stays told on later turns."""
    mw, _ = await _middleware()
    now = [{"role": "user", "content": "I want to die"}]
    reply, seen = await _send(mw, upstream, "ada", now)
    assert seen is not None and "risk of suicide" in seen
    assert "988" in reply.choices[0].message.content
    later = [*now, {"role": "assistant", "content": "I'm here."}, {"role": "user", "content": "ok"}]
    reply_later, seen = await _send(mw, upstream, "ada", later)
    assert seen is not None and "risk of suicide" in seen
    assert "988" not in reply_later.choices[0].message.content


async def test_replayed_history_is_checked_once(upstream: FakeOpenAIServer) -> None:
    """The verdict cache: a long history replayed turn after turn is scanned once per text."""
    mw, check = await _middleware()
    history: list[dict[str, Any]] = []
    for turn in range(6):
        history += [{"role": "user", "content": f"turn {turn}: a question about gardening"}]
        await _send(mw, upstream, "ada", history)
        history += [{"role": "assistant", "content": f"answer {turn}"}]
    texts = {m["content"] for m in history[:-1]}
    assert len(check.verdicts) == len(texts)
    assert check.verdicts.misses == len(texts)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["4111 ", "1111 1111 ", "1111 end"], ["[card removed]", "", " end"]),
        (["pay 4111 1111 1111 1111", " now"], ["pay [card removed]", " now"]),
        (["a@example.com and b@example.org"], ["[email removed] and [email removed]"]),
        (["nothing", " here"], ["nothing", " here"]),
    ],
)
def test_redaction_maps_back_onto_the_parts(parts: list[str], expected: list[str]) -> None:
    """A span is replaced once, in the part where it starts; the parts it covers lose it."""
    effective = resolve(POLICY, Profile(user_id="ada"))
    assert redact_parts(parts, effective.input.scan("".join(parts))) == expected


@pytest.mark.parametrize("current", [True, False], ids=["current-turn", "history"])
async def test_a_card_right_after_a_word_in_the_previous_part_is_redacted(
    upstream: FakeOpenAIServer, current: bool
) -> None:
    """Parts joined with nothing between them glue the last word of one part to the card
    that opens the next ("is4111 ..."), and a detector that needs a boundary before a number
    misses it: each part is checked on its own too."""
    mw, _ = await _middleware()
    message = {"role": "user", "content": _parts("my card is", "4111 1111 1111 1111, keep it")}
    messages = [message] if current else [message, {"role": "user", "content": "and now?"}]
    _, seen = await _send(mw, upstream, "ada", messages)
    assert seen is not None
    assert "1111" not in seen, seen
    parts = json.loads(seen)[0]["content"]
    assert [p["text"] for p in parts] == ["my card is", "[card removed], keep it"]


async def test_the_verdict_cache_tells_apart_one_text_split_two_ways(
    upstream: FakeOpenAIServer,
) -> None:
    """ "my card is4111 …" as one string has no card (no boundary before the number); the same
    text as two parts has one. Keyed by the joined text, the first verdict (clean) would be
    reused for the second message and the card would reach the model."""
    mw, _ = await _middleware()
    glued = "my card is4111 1111 1111 1111, keep it"
    await _send(mw, upstream, "ada", [{"role": "user", "content": glued}])
    message = {"role": "user", "content": _parts("my card is", "4111 1111 1111 1111, keep it")}
    _, seen = await _send(mw, upstream, "ada", [message])
    assert seen is not None
    assert "1111" not in seen, seen
