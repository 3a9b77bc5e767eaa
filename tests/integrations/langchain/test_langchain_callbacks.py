"""The drop-in handlers on langchain-core's fake chat models: usage recorded, blocked inputs and
outputs abort the call with a typed error, per-run state cleaned up, sync and async."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_stages import Recorder
from persona_mw_langchain import PersonaCallbackHandler, PersonaSyncCallbackHandler

from persona_mw import (
    BoundsError,
    Config,
    ConfigError,
    InputBlocked,
    Middleware,
    OutputBlocked,
    build_middleware,
    parse_profile,
)
from persona_mw.testing import capture_logs

Handler = PersonaCallbackHandler | PersonaSyncCallbackHandler

# (mode, handler class): the async handler aborts the async calls, the sync one aborts all.
CASES = [
    ("ainvoke", PersonaCallbackHandler),
    ("astream", PersonaCallbackHandler),
    ("invoke", PersonaSyncCallbackHandler),
    ("stream", PersonaSyncCallbackHandler),
    ("ainvoke", PersonaSyncCallbackHandler),
    ("astream", PersonaSyncCallbackHandler),
]


async def run(
    model: Any,
    mode: str,
    text: str,
    handler: Handler,
    *,
    user: str | None = "ada",
    seen: list[str] | None = None,
) -> str:
    config: dict[str, Any] = {"callbacks": [handler]}
    if user is not None:
        config["metadata"] = {"persona_user": user}
    seen = seen if seen is not None else []
    if mode == "invoke":
        return str(model.invoke(text, config=config).content)
    if mode == "ainvoke":
        return str((await model.ainvoke(text, config=config)).content)
    if mode == "stream":
        for chunk in model.stream(text, config=config):
            seen.append(chunk.content)
    else:
        async for chunk in model.astream(text, config=config):
            seen.append(chunk.content)
    return "".join(seen)


@pytest.mark.parametrize(("mode", "cls"), CASES)
async def test_records_usage_and_logs_the_request(
    mode: str, cls: type[Handler], mw: Middleware, recorder: Recorder
) -> None:
    handler = cls(mw)
    model = GenericFakeChatModel(messages=iter(["A fine answer."]))
    with capture_logs() as events:
        text = await run(model, mode, "how do I sleep?", handler)
    assert text == "A fine answer."
    (record,) = recorder.records
    assert (record.user, record.surface, record.outcome, record.output) == (
        "ada",
        "langchain",
        "ok",
        "A fine answer.",
    )
    assert record.stream == mode.endswith("stream")
    # The callback could not send the personalised prompt: it records what the model really got.
    assert record.prompt == [{"role": "user", "content": "how do I sleep?"}]
    assert record.exposure == set()
    (event,) = [e for e in events if e["event"] == "request.completed"]
    assert (event["surface"], event["outcome"]) == ("langchain", "ok")
    assert handler.open_runs == 0


@pytest.mark.parametrize(("mode", "cls"), CASES)
async def test_blocked_input_aborts_before_the_model(
    mode: str, cls: type[Handler], mw: Middleware, recorder: Recorder
) -> None:
    handler = cls(mw)
    model = GenericFakeChatModel(messages=iter(["never"]))
    with pytest.raises(InputBlocked) as raised:
        await run(model, mode, "something forbidden", handler)
    assert (raised.value.rule_id, raised.value.tier) == ("no-forbidden", 2)
    assert raised.value.user_message == "I can't help with that."
    assert next(model.messages, None) == "never"  # the model was not called
    (record,) = recorder.records
    assert (record.outcome, record.finish_reason) == ("blocked", "content_filter")
    assert handler.open_runs == 0


@pytest.mark.parametrize(("mode", "cls"), CASES)
async def test_blocked_output_aborts_the_call(
    mode: str, cls: type[Handler], mw: Middleware, recorder: Recorder
) -> None:
    """Streamed, the token that completes "secret" raises; without streaming, on_llm_end does,
    so ``invoke`` raises instead of returning the reply."""
    handler = cls(mw)
    model = FakeListChatModel(responses=["ok, the secret is 42"])
    seen: list[str] = []
    with pytest.raises(OutputBlocked) as raised:
        await run(model, mode, "hi", handler, seen=seen)
    assert raised.value.rule_id == "no-secret-out"
    if mode.endswith("stream"):
        # No hold-back in a callback: what came before the completing token was already out.
        assert "".join(seen) == "ok, the secre"
    (record,) = recorder.records
    assert (record.outcome, record.finish_reason, record.rules) == (
        "filtered",
        "content_filter",
        ["no-secret-out"],
    )
    assert handler.open_runs == 0


@pytest.mark.parametrize(("mode", "cls"), CASES)
async def test_model_error_is_recorded(
    mode: str, cls: type[Handler], mw: Middleware, recorder: Recorder
) -> None:
    handler = cls(mw)
    model = GenericFakeChatModel(messages=iter([]))
    with pytest.raises(Exception) as raised:
        await run(model, mode, "hi", handler)
    assert not isinstance(raised.value, ConfigError | BoundsError)
    (record,) = recorder.records
    assert record.outcome == "error"
    assert handler.open_runs == 0


@pytest.mark.parametrize(
    ("user", "default", "expected"),
    [("meta", None, "meta"), ("meta", "dflt", "meta"), (None, "dflt", "dflt")],
)
async def test_user_from_metadata_or_default(
    user: str | None, default: str | None, expected: str, mw: Middleware, recorder: Recorder
) -> None:
    handler = PersonaCallbackHandler(mw, default_user=default)
    await run(GenericFakeChatModel(messages=iter(["x"])), "ainvoke", "hi", handler, user=user)
    assert recorder.records[-1].user == expected


async def test_no_user_aborts_with_a_config_error(mw: Middleware) -> None:
    handler = PersonaCallbackHandler(mw)
    with pytest.raises(ConfigError, match="persona_user"):
        await run(GenericFakeChatModel(messages=iter(["x"])), "ainvoke", "hi", handler, user=None)


async def test_one_handler_serves_concurrent_runs(mw: Middleware, recorder: Recorder) -> None:
    """Per-call state is keyed by run_id: 30 interleaved streams, each recorded with its user
    and its own text, and nothing left behind."""
    handler = PersonaCallbackHandler(mw)
    model = FakeListChatModel(responses=[f"answer {i}" for i in range(30)])

    async def one(i: int) -> None:
        config = {"callbacks": [handler], "metadata": {"persona_user": f"u{i}"}}
        async for _ in model.astream(f"q{i}", config=config):
            await asyncio.sleep(0)

    await asyncio.gather(*(one(i) for i in range(30)))
    assert len(recorder.records) == 30
    assert len({r.user for r in recorder.records}) == 30
    assert {r.output for r in recorder.records} == {f"answer {i}" for i in range(30)}
    assert handler.open_runs == 0


async def test_handler_on_a_chain_checks_the_model_call(mw: Middleware, recorder: Recorder) -> None:
    """Handlers given to a chain are inherited by the chat model inside it."""
    handler = PersonaCallbackHandler(mw)
    model = GenericFakeChatModel(messages=iter(["x"]))
    chain = RunnableLambda(lambda q: [SystemMessage("be brief"), HumanMessage(q)]) | model
    with pytest.raises(InputBlocked):
        await chain.ainvoke(
            "forbidden stuff", config={"callbacks": [handler], "metadata": {"persona_user": "ada"}}
        )
    assert recorder.records[-1].outcome == "blocked"


def test_handler_attached_to_the_model_itself(mw: Middleware, recorder: Recorder) -> None:
    """The one-line drop-in: ``callbacks=[handler]`` on the model's constructor."""
    model = GenericFakeChatModel(
        messages=iter(["x"]), callbacks=[PersonaSyncCallbackHandler(mw, default_user="ada")]
    )
    assert model.invoke("hi").content == "x"
    with pytest.raises(InputBlocked):
        model.invoke("forbidden")
    assert [r.outcome for r in recorder.records] == ["ok", "blocked"]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="LangChain only logs what an async handler raises during a sync .invoke(): it cannot "
    "abort there. Use PersonaSyncCallbackHandler in sync code, or PersonaChatModel.",
)
def test_async_handler_cannot_abort_a_sync_invoke(mw: Middleware) -> None:
    model = GenericFakeChatModel(messages=iter(["x"]))
    try:
        model.invoke(
            "forbidden", config={"callbacks": [PersonaCallbackHandler(mw, default_user="ada")]}
        )
    except InputBlocked:
        return
    raise AssertionError("the blocked input reached the model")


def _bounded(tmp_path: Path, policy: dict[str, Any], closing: AsyncExitStack) -> Middleware:
    """A middleware wired as deployed (build_middleware) with ``policy`` as its bounds, closed
    after the test."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": "t-1", **policy}))
    mw = build_middleware(
        Config.model_validate(
            {"settings": {"hash_secret": "t"}, "bounds": {"policies": [str(path)]}}
        )
    )
    closing.push_async_callback(mw.aclose)
    return mw


@pytest.mark.parametrize("cls", [PersonaCallbackHandler, PersonaSyncCallbackHandler])
@pytest.mark.parametrize(
    ("policy", "rules"),
    [
        pytest.param({"packs": ["pii"]}, ["pii"], id="pii-pack"),
        pytest.param(
            {
                "rules": [
                    {
                        "id": "t.swear",
                        "tier": 2,
                        "detector": {"kind": "phrases", "phrases": ["darn"]},
                        "action": "block",
                        "message": "no",
                        "adjustable": {"values": ["redact", "off"], "eligibility": "all"},
                    }
                ]
            },
            ["t.swear"],
            id="a-user-may-choose-redact",
        ),
    ],
)
def test_a_policy_that_redacts_is_refused_when_the_handler_is_made(
    tmp_path: Path,
    closing: AsyncExitStack,
    cls: type[Handler],
    policy: dict[str, Any],
    rules: list[str],
) -> None:
    """Issue 12, deliverable 9: a handler cannot change text, so a deployer rule that redacts
    (or that users may set to redact) would hold on no call. The handler refuses the policy at
    construction, naming the rules and the wrapper that applies them."""
    mw = _bounded(tmp_path, policy, closing)
    with pytest.raises(ConfigError) as raised:
        cls(mw)
    message = str(raised.value)
    assert "PersonaChatModel" in message
    assert all(rule in message for rule in rules), message


@pytest.mark.parametrize("cls", [PersonaCallbackHandler, PersonaSyncCallbackHandler])
def test_a_policy_without_redactions_is_accepted(
    tmp_path: Path, closing: AsyncExitStack, cls: type[Handler]
) -> None:
    """The baseline packs and a pii pack the deployer set to ``log`` have nothing to redact."""
    baseline = build_middleware(Config.model_validate({"settings": {"hash_secret": "t"}}))
    closing.push_async_callback(baseline.aclose)
    cls(baseline)
    cls(_bounded(tmp_path, {"packs": [{"name": "pii", "action": "log"}]}, closing))


@pytest.mark.parametrize(("mode", "cls"), CASES)
async def test_redactions_it_cannot_apply_are_not_logged_as_applied(
    tmp_path: Path, closing: AsyncExitStack, mode: str, cls: type[Handler]
) -> None:
    """Issue 12, finding 9: a user switched the pii pack on for themselves (tier 3, so the
    handler could not refuse it up front); the callback sees an e-mail address in the question
    and in the reply but can change neither. The log must not say ``redact``: it says the rule
    fired and was not applied."""
    mw = _bounded(tmp_path, {"packs": ["crisis"]}, closing)
    await mw.store.put(parse_profile({"user_id": "ada", "bounds": {"enable_packs": ["pii"]}}))
    handler = cls(mw)
    model = GenericFakeChatModel(messages=iter(["Write to bob.smith@example.com today."]))
    with capture_logs() as events:
        text = await run(model, mode, "Mail me at ada@example.org please.", handler)
    assert "bob.smith@example.com" in text  # a callback cannot mask what the caller gets
    (event,) = [e for e in events if e["event"] == "request.completed"]
    pii = [d for d in event["decisions"] if d["rule"].startswith("pii")]
    assert {d["stage"] for d in pii} == {"input", "output"}, event["decisions"]
    assert all(d["action"] == "log" for d in pii), pii
    assert not [d for d in event["decisions"] if d["action"] == "redact"]
