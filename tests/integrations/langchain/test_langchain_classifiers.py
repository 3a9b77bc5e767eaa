"""Model-backed detectors through LangChain: PersonaChatModel (ChatOpenAI → the fake provider
over HTTP) holds the reply until the input classifiers answered, so a moderation block that
comes after the model's reply still replaces it, in all four modes; the callback handlers, which
cannot hold a reply, await the classifiers before the model starts and abort with InputBlocked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from langchain_openai import ChatOpenAI
from persona_mw_langchain import (
    PersonaCallbackHandler,
    PersonaChatModel,
    PersonaSyncCallbackHandler,
)

from persona_mw import Config, ConfigError, InputBlocked, Middleware, build_middleware
from persona_mw.testing import FakeOpenAIServer, Fault, echo_reply

MOD_BLOCK = "Moderation: I can't help with hurting people."
ADA = {"configurable": {"persona_user": "ada"}}
POLICY = {
    "version": "langchain-classifiers",
    "rules": [
        {
            "id": "mod.violence",
            "tier": 1,
            "stage": "input",
            "detector": {"kind": "moderation", "categories": ["violence"], "timeout_s": 3},
            "message": MOD_BLOCK,
        }
    ],
}


def _moderate(text: str) -> dict[str, float]:
    return {"violence": 0.9} if "hurt them" in text else {}


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=echo_reply, moderate=_moderate) as server:
        yield server


def _classified(provider: FakeOpenAIServer, policy: Path) -> Middleware:
    """A middleware wired as deployed, its classifiers asking ``provider``."""
    return build_middleware(
        Config.model_validate(
            {
                "settings": {"hash_secret": "t"},
                "bounds": {
                    "policies": [str(policy)],
                    "classifier_kwargs": {"api_base": provider.base_url, "api_key": "t"},
                },
            }
        )
    )


@pytest.fixture
async def mw(provider: FakeOpenAIServer, tmp_path: Path) -> AsyncIterator[Middleware]:
    provider.clear_faults()
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    async with _classified(provider, path) as middleware:
        yield middleware


def _openai(provider: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=provider.base_url,
        api_key="test-key",
        max_retries=0,
        http_async_client=httpx.AsyncClient(),
    )


async def _text(chat: Any, mode: str, text: str, config: dict[str, Any]) -> str:
    if mode == "invoke":
        return str(chat.invoke(text, config=config).content)
    if mode == "ainvoke":
        return str((await chat.ainvoke(text, config=config)).content)
    if mode == "stream":
        return "".join(str(c.content) for c in chat.stream(text, config=config))
    return "".join([str(c.content) async for c in chat.astream(text, config=config)])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_late_moderation_block_replaces_the_reply(
    mw: Middleware, provider: FakeOpenAIServer, mode: str
) -> None:
    provider.inject(Fault(route="moderations", delay=0.4))
    chats = len(provider.requests)
    chat = PersonaChatModel(inner=_openai(provider), middleware=mw)
    assert await _text(chat, mode, "I will hurt them", ADA) == MOD_BLOCK
    assert len(provider.requests) > chats  # the model ran beside the classifier


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_safe_verdict_lets_the_reply_through(
    mw: Middleware, provider: FakeOpenAIServer, mode: str
) -> None:
    chat = PersonaChatModel(inner=_openai(provider), middleware=mw)
    assert await _text(chat, mode, "hello", ADA) == "echo: hello"


@pytest.mark.parametrize(
    ("mode", "cls"),
    [("ainvoke", PersonaCallbackHandler), ("invoke", PersonaSyncCallbackHandler)],
)
async def test_callback_handlers_await_the_classifiers_before_the_model(
    mw: Middleware,
    provider: FakeOpenAIServer,
    mode: str,
    cls: type[PersonaCallbackHandler | PersonaSyncCallbackHandler],
) -> None:
    provider.inject(Fault(route="moderations", delay=0.3))
    chats = len(provider.requests)
    config = {"callbacks": [cls(mw)], "metadata": {"persona_user": "ada"}}
    with pytest.raises(InputBlocked) as raised:
        await _text(_openai(provider), mode, "I will hurt them", config)
    assert (raised.value.rule_id, raised.value.user_message) == ("mod.violence", MOD_BLOCK)
    assert len(provider.requests) == chats  # the model was never called


# -- model-backed rules on the reply ----------------------------------------------------------

REPLY_BLOCK = "Moderation: that reply was withheld."
SAFE_TEXT = (
    "The garden needs water in the morning before the sun is high. "
    "Tomatoes like a deep soak twice a week rather than a splash. "
)


@pytest.fixture
async def reply_checked(provider: FakeOpenAIServer, tmp_path: Path) -> AsyncIterator[Middleware]:
    """A middleware whose only rule checks replies with the moderation endpoint."""
    provider.clear_faults()
    rule = {**POLICY["rules"][0], "id": "mod.reply", "stage": "output", "message": REPLY_BLOCK}
    rule["detector"] = {**rule["detector"], "window": 60}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": "langchain-reply-checks", "rules": [rule]}))
    async with _classified(provider, path) as middleware:
        yield middleware


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_the_chat_model_checks_the_reply_with_the_model(
    reply_checked: Middleware, provider: FakeOpenAIServer, mode: str
) -> None:
    chat = PersonaChatModel(inner=_openai(provider), middleware=reply_checked)
    assert await _text(chat, mode, SAFE_TEXT, ADA) == f"echo: {SAFE_TEXT}"
    flagged = await _text(chat, mode, SAFE_TEXT + "Then I will hurt them tonight.", ADA)
    assert "hurt them" not in flagged
    assert flagged.endswith(REPLY_BLOCK)


@pytest.mark.parametrize(
    ("mode", "cls"),
    [("ainvoke", PersonaCallbackHandler), ("invoke", PersonaSyncCallbackHandler)],
)
async def test_callback_handlers_refuse_reply_checks_they_cannot_hold_for(
    reply_checked: Middleware,
    provider: FakeOpenAIServer,
    mode: str,
    cls: type[PersonaCallbackHandler | PersonaSyncCallbackHandler],
) -> None:
    chats = len(provider.requests)
    config = {"callbacks": [cls(reply_checked)], "metadata": {"persona_user": "ada"}}
    with pytest.raises(ConfigError, match="PersonaChatModel"):
        await _text(_openai(provider), mode, "hello", config)
    assert len(provider.requests) == chats  # the model was never called
