"""PersonaChatModel on reasoning: the provider's ``reasoning_content`` (ChatLiteLLM, DeepSeek)
goes through the engine like the text, whole and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from persona_mw_langchain import PersonaChatModel

from persona_mw import Config, Middleware, build_middleware

CARD = "4111 1111 1111 1111"
ADA = {"configurable": {"persona_user": "ada"}}


@pytest.fixture
async def pii(tmp_path: Path) -> AsyncIterator[Middleware]:
    """A middleware with the pii pack, closed after the test."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": "t-1", "packs": ["pii"]}))
    config = {"settings": {"hash_secret": "t"}, "bounds": {"policies": [str(path)]}}
    async with build_middleware(Config.model_validate(config)) as mw:
        yield mw


def _chat(mw: Middleware, message: AIMessage) -> PersonaChatModel:
    return PersonaChatModel(inner=GenericFakeChatModel(messages=iter([message])), middleware=mw)


async def _reasoning(chat: PersonaChatModel, mode: str) -> tuple[str, Any]:
    if mode == "ainvoke":
        out = await chat.ainvoke("hi", config=ADA)
        return str(out.additional_kwargs.get("reasoning_content", "")), out.content
    chunks = [c async for c in chat.astream("hi", config=ADA)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return str(merged.additional_kwargs.get("reasoning_content", "")), merged.content


@pytest.mark.parametrize("mode", ["ainvoke", "astream"])
async def test_reasoning_content_is_redacted(pii: Middleware, mode: str) -> None:
    message = AIMessage(
        content="the answer", additional_kwargs={"reasoning_content": f"card {CARD} seen"}
    )
    reasoning, content = await _reasoning(_chat(pii, message), mode)
    assert "1111" not in reasoning and "[card removed]" in reasoning
    assert "the answer" in str(content)


@pytest.mark.parametrize(
    "block",
    [
        {"type": "thinking", "thinking": f"card {CARD} seen", "signature": "sig"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": f"card {CARD}"}]},
    ],
    ids=["anthropic-thinking", "openai-reasoning"],
)
async def test_reasoning_in_content_blocks_is_checked(
    pii: Middleware, block: dict[str, Any]
) -> None:
    """Anthropic's ``thinking`` blocks (and OpenAI's ``reasoning`` blocks) sit in the content
    list beside the text: a card in them must not reach the app unredacted. (Whole replies:
    LangChain's fake chat model cannot stream a content list.)"""
    message = AIMessage(content=[block, {"type": "text", "text": "the answer"}])
    reasoning, content = await _reasoning(_chat(pii, message), "ainvoke")
    assert "1111" not in repr(content) + reasoning
    assert "[card removed]" in reasoning and "the answer" in str(content)


async def test_unaltered_reasoning_blocks_are_kept_as_written(pii: Middleware) -> None:
    """Nothing to redact: the content list, signature included, is the model's."""
    blocks = [
        {"type": "thinking", "thinking": "plain thoughts", "signature": "sig"},
        {"type": "text", "text": "the answer"},
    ]
    _, content = await _reasoning(_chat(pii, AIMessage(content=list(blocks))), "ainvoke")
    assert content == blocks
