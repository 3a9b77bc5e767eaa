"""Model-backed detectors on the reply (``stage: output``), end to end through
``Middleware.acompletion`` and ``astream`` against a fake provider over real HTTP: the engine
holds what the filters released until the moderation endpoint checked it — a whole reply at
once, a stream in windows — and a flagged window ends the reply with the rule's message."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from classifier_helpers import (
    MOD_BLOCK,
    MODEL,
    SAFE,
    VIOLENT_END,
    WINDOW,
    Collect,
    call,
    moderate,
    output_policy,
)

from persona_mw import Middleware
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.bounds.classifiers import Classifiers, ClassifierSettings
from persona_mw.enforce import Piece, UnsettledChecks
from persona_mw.testing import FakeOpenAIServer, Fault, echo_reply, make_context
from persona_mw.types import CallContext


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=echo_reply, moderate=moderate, chunk_size=4) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(server: FakeOpenAIServer) -> Iterator[None]:
    server.clear_faults()
    yield
    server.clear_faults()


def build(server: FakeOpenAIServer, *, timeout_s: float = 5.0) -> Middleware:
    loaded = policy_from_dict(output_policy(timeout_s))
    classifiers = Classifiers(
        ClassifierSettings(kwargs={"api_base": server.base_url, "api_key": "test"}, cache_ttl_s=0)
    )
    return Middleware(
        input_stages=[BoundsInputStage(policy=loaded, classifiers=classifiers)],
        output_stages=[BoundsOutputStage(policy=loaded, classifiers=classifiers)],
        finish_stages=[Collect()],
    )


def last_context(mw: Middleware) -> CallContext:
    stage = mw.finish_stages[0]
    assert isinstance(stage, Collect)
    return stage.contexts[-1]


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["acompletion", "astream"])


@STREAM
async def test_a_safe_reply_is_checked_and_released_whole(
    server: FakeOpenAIServer, stream: bool
) -> None:
    mw = build(server)
    text, reason, _ = await call(mw, server, SAFE, stream=stream)
    assert text == f"echo: {SAFE}"
    assert reason == "stop"
    checks = last_context(mw).checks
    assert checks and all(c.stage == "output" and c.outcome == "safe" for c in checks)
    assert last_context(mw).decisions == []


async def test_a_stream_is_released_in_windows_of_checked_text(server: FakeOpenAIServer) -> None:
    mw = build(server)
    text, _, pieces = await call(mw, server, SAFE, stream=True)
    assert text == f"echo: {SAFE}"
    # 4-character chunks from the upstream leave in windows: far fewer, none above the window
    assert 2 <= len(pieces) <= len(text) // (WINDOW // 2) + 1
    assert all(len(piece) <= WINDOW for piece in pieces)
    # each window was asked about once, after the windows before it
    assert len(last_context(mw).checks) == len(pieces)


@STREAM
async def test_a_flagged_reply_ends_with_the_rules_message(
    server: FakeOpenAIServer, stream: bool
) -> None:
    mw = build(server)
    text, reason, _ = await call(mw, server, VIOLENT_END, stream=stream)
    assert "hurt them" not in text
    assert MOD_BLOCK in text
    assert reason == "content_filter"
    ctx = last_context(mw)
    assert ctx.outcome == "filtered"
    [decision] = ctx.decisions
    assert (decision.rule_id, decision.stage, decision.action) == (
        "mod.reply-violence",
        "output",
        "block",
    )


async def test_a_stream_keeps_the_windows_checked_before_the_flagged_one(
    server: FakeOpenAIServer,
) -> None:
    mw = build(server)
    text, _, _ = await call(mw, server, VIOLENT_END, stream=True)
    assert text.startswith("echo: The garden needs water")
    assert text.endswith(MOD_BLOCK)
    assert "hurt them" not in text


@STREAM
async def test_a_failing_tier_1_reply_check_fails_closed(
    server: FakeOpenAIServer, stream: bool
) -> None:
    server.inject(Fault(status=500, route="moderations", times=50))
    mw = build(server)
    text, reason, _ = await call(mw, server, SAFE, stream=stream)
    assert reason == "content_filter"
    assert text.endswith(MOD_BLOCK)
    assert "Mulch" not in text
    assert {c.outcome for c in last_context(mw).checks} == {"error"}


async def test_a_reply_check_that_times_out_fails_closed(server: FakeOpenAIServer) -> None:
    server.inject(Fault(delay=2.0, route="moderations", times=50))
    mw = build(server, timeout_s=0.2)
    text, reason, _ = await call(mw, server, SAFE, stream=False)
    assert reason == "content_filter"
    assert text == MOD_BLOCK
    assert {c.outcome for c in last_context(mw).checks} == {"timeout"}


async def test_the_synchronous_engine_refuses_a_call_with_reply_checks(
    server: FakeOpenAIServer,
) -> None:
    """A host that feeds synchronously could not wait for the model's verdict: it is told to
    use the async methods instead of releasing unchecked text."""
    mw = build(server)
    ctx = make_context("ada", model=MODEL)
    await mw.run_input_stages(ctx)
    enforcer = mw.enforcer(ctx)
    assert enforcer.reviews
    with pytest.raises(UnsettledChecks, match="afeed"):
        enforcer.feed(0, Piece(content="hello"))
    release = await enforcer.awhole(0, Piece(content="hello there"))
    assert release.content == "hello there"
    enforcer.close()


async def test_a_rule_that_fires_in_several_windows_makes_one_decision(
    server: FakeOpenAIServer,
) -> None:
    """A logging rule flags two windows of one stream: one decision, with both spans."""
    rules = output_policy()
    rules["rules"][0] = {**rules["rules"][0], "action": "log", "tier": 2, "message": ""}
    loaded = policy_from_dict(rules)
    classifiers = Classifiers(
        ClassifierSettings(kwargs={"api_base": server.base_url, "api_key": "test"}, cache_ttl_s=0)
    )
    mw = Middleware(
        input_stages=[BoundsInputStage(policy=loaded, classifiers=classifiers)],
        output_stages=[BoundsOutputStage(policy=loaded, classifiers=classifiers)],
        finish_stages=[Collect()],
    )
    twice = "I will hurt them, he said. " + SAFE + "I will hurt them, she said."
    text, reason, _ = await call(mw, server, twice, stream=True)
    assert text == f"echo: {twice}"  # logged, not changed
    assert reason == "stop"
    [decision] = last_context(mw).decisions
    assert (decision.rule_id, decision.action) == ("mod.reply-violence", "log")
    # each span is a window the classifier flagged: the first and the last, in order
    spans = decision.spans
    assert len(spans) >= 2
    assert spans[0].start == 0 and spans[-1].end == len(text)
    assert all(s.end - s.start <= WINDOW for s in spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
