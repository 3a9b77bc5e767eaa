"""LangChain messages ⇄ persona_mw's OpenAI-format messages (and the engine's pieces),
converted once at the edge.

persona_mw's stages read and rewrite OpenAI-style dicts. Going in, every LangChain message
becomes one dict. Coming back, a dict the stages left untouched maps back to the very message
the application passed (keeping ids, ``additional_kwargs`` and provider fields); only the dicts
the stages made or changed (the personalised system message) are converted anew. "Untouched"
means the same dict with the same content, so a stage that edits a dict in place is seen.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import convert_to_messages, convert_to_openai_messages

from persona_mw.enforce import ToolCallPiece
from persona_mw.types import Message

__all__ = ["USER_KEY", "Conversation", "reasoning_blocks", "reasoning_of", "tool_pieces"]

#: The key that names the end user: in ``configurable``, in ``metadata``, or bound as a kwarg.
USER_KEY = "persona_user"


class Conversation:
    """One call's messages in both forms: ``wire`` (for the stages) and the originals."""

    __slots__ = ("_originals", "wire")

    def __init__(self, messages: Sequence[BaseMessage]) -> None:
        self.wire: list[Message] = list(convert_to_openai_messages(list(messages)))
        self._originals = {
            id(d): (m, copy.deepcopy(d)) for d, m in zip(self.wire, messages, strict=True)
        }

    def to_langchain(self, prompt: Sequence[Message]) -> list[BaseMessage]:
        """The stages' prompt as LangChain messages, reusing the originals where unchanged."""
        out: list[BaseMessage] = []
        for message in prompt:
            original, snapshot = self._originals.get(id(message), (None, None))
            if original is not None and message == snapshot:
                out.append(original)
            else:
                out.extend(convert_to_messages([message]))
        return out


def reasoning_of(message: BaseMessage) -> str:
    """The model's reasoning: ``reasoning_content`` (ChatLiteLLM, DeepSeek put it there) and
    the text of reasoning content blocks (Anthropic's ``thinking``, OpenAI's ``reasoning``)."""
    value = message.additional_kwargs.get("reasoning_content")
    texts = [value] if isinstance(value, str) else []
    texts += reasoning_blocks(message)
    return "\n\n".join(t for t in texts if t)


def reasoning_blocks(message: BaseMessage) -> list[str]:
    """The text of each reasoning block in the message's content list."""
    if not isinstance(message.content, list):
        return []
    texts = []
    for block in message.content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
            texts.append(block["thinking"])
        elif block.get("type") == "reasoning":
            if isinstance(block.get("reasoning"), str):
                texts.append(block["reasoning"])
            texts += [
                s["text"]
                for s in block.get("summary") or ()
                if isinstance(s, dict) and isinstance(s.get("text"), str)
            ]
    return texts


def tool_pieces(message: BaseMessage) -> tuple[ToolCallPiece, ...]:
    """A whole message's tool calls (valid first, then invalid ones) and legacy function call."""
    if not isinstance(message, AIMessage):
        return ()
    valid = [
        ToolCallPiece(i, id=c.get("id"), name=c["name"], arguments=json.dumps(c["args"]))
        for i, c in enumerate(message.tool_calls)
    ]
    invalid = [
        ToolCallPiece(
            len(valid) + i, id=c.get("id"), name=c.get("name"), arguments=c.get("args") or ""
        )
        for i, c in enumerate(message.invalid_tool_calls)
    ]
    legacy = message.additional_kwargs.get("function_call")
    function = (
        [
            ToolCallPiece(
                0,
                name=legacy.get("name"),
                arguments=str(legacy.get("arguments") or ""),
                kind="function",
            )
        ]
        if isinstance(legacy, dict)
        else []
    )
    return (*valid, *invalid, *function)
