"""Model-backed detectors (moderation, judge) end to end through ``Middleware.acompletion`` and
``astream``, against a fake provider over real HTTP: the model, ``/v1/moderations`` and a guard
model. The input classifiers run beside the model call; the engine holds the reply until they
answered, so a block that comes after the model's reply still replaces it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from classifier_helpers import (
    GUARD,
    JUDGE_BLOCK,
    MOD_BLOCK,
    MODEL,
    QUIET_DESPAIR,
    VIOLENT,
    WEAPON,
    Collect,
    Provider,
    call,
    moderate,
    policy,
)

from persona_mw import Middleware
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.bounds.classifiers import Classifiers, ClassifierSettings
from persona_mw.enforce import UnsettledChecks
from persona_mw.testing import FakeOpenAIServer, Fault, capture_logs
from persona_mw.types import CallContext


@pytest.fixture(scope="module")
def provider() -> Provider:
    return Provider()


@pytest.fixture(scope="module")
def server(provider: Provider) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=provider, moderate=moderate, chunk_size=3) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(server: FakeOpenAIServer, provider: Provider) -> Iterator[None]:
    server.clear_faults()
    provider.model_delay = 0.0
    provider.arrived.clear()
    yield
    server.clear_faults()


def build(
    server: FakeOpenAIServer,
    *,
    moderation_timeout_s: float = 5.0,
    judge_timeout_s: float = 5.0,
    classifiers: Classifiers | None = None,
    **settings: Any,
) -> Middleware:
    loaded = policy_from_dict(policy(moderation_timeout_s, judge_timeout_s))
    classifiers = classifiers or Classifiers(
        ClassifierSettings(kwargs={"api_base": server.base_url, "api_key": "test"}, **settings)
    )
    return Middleware(
        input_stages=[BoundsInputStage(policy=loaded, classifiers=classifiers)],
        output_stages=[BoundsOutputStage(policy=loaded)],
        finish_stages=[Collect()],
    )


def collected(mw: Middleware) -> list[CallContext]:
    stage = mw.finish_stages[0]
    assert isinstance(stage, Collect)
    return stage.contexts


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["acompletion", "astream"])


@STREAM
async def test_a_block_that_comes_after_the_model_still_replaces_the_reply(
    server: FakeOpenAIServer, stream: bool
) -> None:
    """The moderation endpoint answers 0.4 s after the model did: nothing of the model's reply
    is released, the user gets the tier-1 rule's message."""
    mw = build(server)
    server.inject(Fault(route="moderations", delay=0.4))
    chats = len(server.requests)
    text, reason, pieces = await call(mw, server, VIOLENT, stream=stream)
    assert (text, reason) == (MOD_BLOCK, "content_filter")
    assert not any("echo" in p for p in pieces)
    assert len(server.requests) > chats  # the model was called, beside the classifiers
    ctx = collected(mw)[-1]
    assert ctx.outcome == "blocked"
    assert ("mod.violence", "block", "moderation") in [
        (d.rule_id, d.action, d.detector) for d in ctx.decisions
    ]
    assert ctx.output_text == MOD_BLOCK
    if not stream:  # the model ran: its usage is kept, not zeroed
        assert ctx.prompt_tokens > 0
    assert not ctx.pending


@STREAM
async def test_a_judge_block_replaces_the_reply(server: FakeOpenAIServer, stream: bool) -> None:
    mw = build(server)
    text, reason, pieces = await call(mw, server, WEAPON, stream=stream)
    assert (text, reason) == (JUDGE_BLOCK, "content_filter")
    assert not any("echo" in p for p in pieces)
    ctx = collected(mw)[-1]
    judged = [c for c in ctx.checks if c.kind == "judge"]
    assert [(c.rule_id, c.outcome, c.labels, c.model) for c in judged] == [
        ("guard.weapons", "flagged", ("S9",), f"openai/{GUARD}")
    ]


@STREAM
async def test_safe_verdicts_let_the_reply_through(server: FakeOpenAIServer, stream: bool) -> None:
    mw = build(server)
    text, reason, _ = await call(mw, server, "what is the capital of France", stream=stream)
    assert (text, reason) == ("echo: what is the capital of France", "stop")
    ctx = collected(mw)[-1]
    assert sorted((c.kind, c.outcome) for c in ctx.checks) == [
        ("judge", "safe"),
        ("moderation", "safe"),
    ]
    assert ctx.outcome == "ok" and not ctx.decisions


async def test_the_classifiers_run_beside_the_model_call(
    server: FakeOpenAIServer, provider: Provider
) -> None:
    """The model's request reaches the provider while the moderation verdict is still 0.5 s
    away: the classifiers do not hold the model call back."""
    mw = build(server)
    server.inject(Fault(route="moderations", delay=0.5))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await call(mw, server, "tell me about tides", stream=False)
    model_at = next(t for model, t in provider.arrived if model == "fake")
    # monotonic clocks of one process: the server thread's and ours
    assert model_at - started < 0.4


@STREAM
async def test_the_classifiers_start_once_the_model_request_is_out(
    server: FakeOpenAIServer, stream: bool
) -> None:
    """A classifier call costs milliseconds of CPU on the one event loop: it starts after
    LiteLLM handed the model's request to the provider's client (its pre-API-call event), so
    it cannot delay that request. Seen through LiteLLM's own per-call ``logger_fn``, on the
    model call (the application's, which still gets every event) and on the classifiers'."""
    events: list[str] = []

    def logged(who: str) -> Any:
        def logger_fn(details: dict[str, Any]) -> None:
            if details.get("log_event_type") == "pre_api_call":
                events.append(who)

        return logger_fn

    settings = {"api_base": server.base_url, "api_key": "test", "logger_fn": logged("classifier")}
    mw = build(server, classifiers=Classifiers(ClassifierSettings(kwargs=settings)))
    kwargs: dict[str, Any] = {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": f"tell me about tides ({stream})"}],
        "api_base": server.base_url,
        "api_key": "test",
        "logger_fn": logged("model"),
    }
    if stream:
        async for _ in mw.astream(**kwargs):
            pass
    else:
        await mw.acompletion(**kwargs)
    assert events == ["model", "classifier", "classifier"]  # the moderation and the judge
    assert [c.outcome for c in collected(mw)[-1].checks] == ["safe", "safe"]


@STREAM
async def test_moderation_self_harm_fires_the_crisis_protocol(
    server: FakeOpenAIServer, stream: bool
) -> None:
    """A category mapped to a pack fires that pack's rule: the crisis referral is appended to
    the model's reply, once (the phrase rules did not see this sentence; the pack's own
    classifier reads it too)."""
    mw = build(server)
    text, reason, _ = await call(mw, server, QUIET_DESPAIR, stream=stream)
    assert text.startswith(f"echo: {QUIET_DESPAIR}")
    assert text.count("988") == 1 and reason == "stop"
    ctx = collected(mw)[-1]
    fired = [(d.rule_id, d.detector, d.action) for d in ctx.decisions]
    assert ("crisis.ideation", "moderation", "append") in fired
    assert {rule_id for rule_id, _, _ in fired} <= {"crisis.ideation", "crisis.ideation-model"}


@pytest.mark.parametrize(
    "fault",
    [Fault(route="moderations", delay=2.0), Fault(route="moderations", status=500, times=10)],
    ids=["timeout", "http-500"],
)
@STREAM
async def test_a_failing_tier_1_classifier_fails_closed(
    server: FakeOpenAIServer, fault: Fault, stream: bool
) -> None:
    mw = build(server, moderation_timeout_s=0.3)
    server.inject(Fault(**{**fault.__dict__}))
    text, reason, pieces = await call(mw, server, "what is the capital of France", stream=stream)
    assert (text, reason) == (MOD_BLOCK, "content_filter")
    assert not any("echo" in p for p in pieces)
    ctx = collected(mw)[-1]
    decision = next(d for d in ctx.decisions if d.rule_id == "mod.violence")
    assert decision.action == "block" and "fail-closed" in (decision.reason or "")
    outcome = next(c.outcome for c in ctx.checks if c.kind == "moderation")
    assert outcome in (("timeout",) if fault.delay else ("error", "timeout"))


@pytest.mark.parametrize(
    "fault",
    [Fault(route="chat", model=GUARD, delay=2.0), Fault(route="chat", model=GUARD, malformed=True)],
    ids=["timeout", "malformed"],
)
async def test_a_failing_tier_2_judge_fails_open_and_is_logged(
    server: FakeOpenAIServer, fault: Fault
) -> None:
    mw = build(server, judge_timeout_s=0.3)
    server.inject(fault)
    with capture_logs() as logs:
        text, reason, _ = await call(mw, server, "what is the capital of France", stream=False)
    assert (text, reason) == ("echo: what is the capital of France", "stop")
    ctx = collected(mw)[-1]
    decision = next(d for d in ctx.decisions if d.rule_id == "guard.weapons")
    assert decision.action == "log" and "fail-open" in (decision.reason or "")
    failed = [e for e in logs if e["event"] == "bounds.classifier_call" and e.get("error")]
    assert [(e["rule_id"], e["fail_mode"]) for e in failed] == [("guard.weapons", "open")]


async def test_verdicts_are_cached_per_text(server: FakeOpenAIServer) -> None:
    """A text asked about once is answered from the classifiers' cache (here by a second
    middleware sharing them, whose input stage has not seen the text)."""
    shared = Classifiers(ClassifierSettings(kwargs={"api_base": server.base_url, "api_key": "t"}))
    first_mw, second_mw = build(server, classifiers=shared), build(server, classifiers=shared)
    before = len(server.moderation_requests)
    for mw in (first_mw, second_mw):
        await mw.acompletion(
            user="ada",
            model=MODEL,
            messages=[{"role": "user", "content": "a question about the moon"}],
            api_base=server.base_url,
            api_key="test",
        )
    assert len(server.moderation_requests) - before == 1
    first, second = collected(first_mw)[-1], collected(second_mw)[-1]
    assert [c.cached for c in first.checks] == [False, False]
    assert [c.cached for c in second.checks] == [True, True]
    assert first.checks[0].text_hash == second.checks[0].text_hash


async def test_a_second_conversation_turn_does_not_ask_again(server: FakeOpenAIServer) -> None:
    """History already judged is not sent to the classifiers again (the verdict cache)."""
    mw = build(server)
    first = [{"role": "user", "content": "first question about rivers"}]
    await mw.acompletion(
        user="ada", model=MODEL, messages=first, api_base=server.base_url, api_key="t"
    )
    before = len(server.moderation_requests)
    second = [
        *first,
        {"role": "assistant", "content": "rivers flow"},
        {"role": "user", "content": "and lakes?"},
    ]
    await mw.acompletion(
        user="ada", model=MODEL, messages=second, api_base=server.base_url, api_key="t"
    )
    asked = [r["input"] for r in server.moderation_requests[before:]]
    assert sorted(asked) == ["and lakes?", "rivers flow"]


async def test_every_call_is_logged_with_a_hash_and_no_text(server: FakeOpenAIServer) -> None:
    mw = build(server)
    with capture_logs() as logs:
        await call(mw, server, VIOLENT, stream=False)
    calls = [e for e in logs if e["event"] == "bounds.classifier_call"]
    assert sorted(e["kind"] for e in calls) == ["judge", "moderation"]
    for event in calls:
        assert len(event["text_hash"]) == 16 and event["chars"] == len(VIOLENT)
        assert "hurt" not in json.dumps(event, default=str)
    moderation = next(e for e in calls if e["kind"] == "moderation")
    assert (moderation["outcome"], moderation["labels"]) == ("flagged", ["violence"])


async def test_a_host_that_feeds_before_settling_is_refused(server: FakeOpenAIServer) -> None:
    """The engine itself refuses to release a reply while an input check is pending: a host
    that forgot to settle fails loudly instead of leaking a reply a late block would replace."""
    from persona_mw.enforce import Piece

    mw = build(server)
    server.inject(Fault(route="moderations", delay=0.3))
    ctx = await mw.begin(
        "ada",
        MODEL,
        [{"role": "user", "content": VIOLENT}],
        {},
        stream=False,
        surface="python",
    )
    await mw.run_input_stages(ctx)
    assert ctx.pending
    enforcer = mw.enforcer(ctx)
    with pytest.raises(UnsettledChecks, match=r"await ReplyEnforcer\.settle"):
        enforcer.whole(0, Piece(content="the model's reply"))
    await enforcer.settle()
    release = enforcer.whole(0, Piece(content="the model's reply"))
    assert (release.content, release.finish_reason) == (MOD_BLOCK, "content_filter")
    enforcer.close()
    await mw.finish(ctx)


async def test_a_failed_model_call_cancels_the_checks(server: FakeOpenAIServer) -> None:
    mw = build(server)
    server.inject(Fault(route="moderations", delay=1.0))
    server.inject(Fault(route="chat", model="fake", status=400))
    with pytest.raises(Exception, match="400"):
        await call(mw, server, "a question", stream=False)
    ctx = collected(mw)[-1]
    assert ctx.outcome == "error" and not ctx.pending
    await asyncio.sleep(0.05)  # a cancelled task ends on its next turn of the loop
    tasks = [t for t in asyncio.all_tasks() if "InputClassifierCheck" in repr(t.get_coro())]
    assert all(t.done() for t in tasks)
