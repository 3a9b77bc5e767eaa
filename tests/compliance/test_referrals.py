"""Crisis referrals and users in scope, as the statutory reports count them, through the wired
middleware (``build_middleware``): a crisis message replayed in later calls' history is no new
referral (every input message is checked, so it fires again there); a user counts once per law
and month however many calls they make, on the in-memory store and on a real Redis shared by
two middlewares (two workers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from persona_mw import Middleware, build_middleware, load_config
from persona_mw.compliance.reports import period_of, statutory_report
from persona_mw.signals import SignalsMetricsStage
from persona_mw.signals.action_state import ActionStateStore

CA, OR = "us-ca-sb243", "us-or-sb1546"
MODEL = "openai/fake"
CRISIS = "I want to end my life"
RESOURCES = "988"


def _counters(mw: Middleware) -> ActionStateStore:
    stage = next(s for s in mw.finish_stages if isinstance(s, SignalsMetricsStage))
    assert stage.counters is not None
    return stage.counters


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def workers(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str
) -> AsyncIterator[list[Middleware]]:
    """One middleware in memory, or two sharing a Redis (the two workers of a server)."""
    laws = {"jurisdictions": [CA]}
    if request.param == "memory":
        mws = [build_middleware(load_config(None, bounds=laws, settings={"hash_secret": "t"}))]
    else:
        store = {"url": redis_url, "prefix": key_prefix}
        mws = [
            build_middleware(
                load_config(None, bounds=laws, store=store, settings={"hash_secret": "t"})
            )
            for _ in range(2)
        ]
    yield mws
    for mw in mws:
        await mw.aclose()


async def _conversation(
    workers: Sequence[Middleware], user: str, turns: Sequence[str], **kwargs: Any
) -> list[str]:
    """The app's ordinary multi-turn loop: each call replays the whole history so far, the
    calls alternating between the workers. Returns the replies."""
    messages: list[dict[str, Any]] = []
    replies = []
    for i, text in enumerate(turns):
        messages.append({"role": "user", "content": text})
        reply = await workers[i % len(workers)].acompletion(
            user=user, model=MODEL, messages=list(messages), mock_response="I hear you.", **kwargs
        )
        content = str(reply.choices[0].message.content)
        replies.append(content)
        messages.append({"role": "assistant", "content": content})
    return replies


async def _figures(mw: Middleware, law: str = CA) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    report = await statutory_report(_counters(mw).counters, law, today, today)
    return dict(report["totals"])


async def test_a_crisis_replayed_in_history_is_referred_once(workers: list[Middleware]) -> None:
    replies = await _conversation(
        workers, "ada", [CRISIS, "thank you", "can we talk about something else?", "ok"]
    )
    assert RESOURCES in replies[0]
    assert not any(RESOURCES in r for r in replies[1:])
    figures = await _figures(workers[0])
    assert figures["crisis_referrals"] == 1
    assert figures["calls_in_scope"] == 4
    assert figures["users_in_scope"] == 1
    year = await _counters(workers[0]).counters(str(datetime.now(UTC).year))
    assert year["crisis_referrals"] == 1  # the annual count (persona-mw report) agrees


async def test_a_new_crisis_message_later_is_a_new_referral(workers: list[Middleware]) -> None:
    await _conversation(workers, "bea", [CRISIS, "thanks", "I want to die"])
    assert (await _figures(workers[0]))["crisis_referrals"] == 2


async def test_oregon_carries_the_resources_on_later_turns_without_counting_again(
    workers: list[Middleware],
) -> None:
    """OR SB 1546: the crisis turn is interrupted (the reply is the protocol's response) and the
    later turns carry the resources; that is one referral, not one per turn."""
    headers = {"jurisdictions": [OR]}
    replies = await _conversation(workers, "cal", [CRISIS, "thanks", "ok"], **headers)
    assert all(RESOURCES in r for r in replies)
    assert "I hear you." not in replies[0]  # interrupted: no model reply
    assert "I hear you." in replies[1]
    figures = await _figures(workers[0], OR)
    assert figures["crisis_referrals"] == 1
    assert figures["calls_in_scope"] == 3 and figures["users_in_scope"] == 1


async def test_users_in_scope_are_people_not_calls(workers: list[Middleware]) -> None:
    for user in ("u1", "u2", "u3"):
        await _conversation(workers, user, ["hello", "and again", "once more"])
    figures = await _figures(workers[0])
    assert figures["users_in_scope"] == 3
    assert figures["calls_in_scope"] == 9
    stored = await _counters(workers[0]).counters(period_of(datetime.now(UTC).date()))
    # the counters name laws and figures, never a user
    assert all(not any(u in key for u in ("u1", "u2", "u3")) for key in stored)
