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

__all__ = ["USER_KEY", "Conversation", "reasoning_of", "tool_pieces"]

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
    """The provider's ``reasoning_content`` (ChatLiteLLM, DeepSeek put it there)."""
    value = message.additional_kwargs.get("reasoning_content")
    return value if isinstance(value, str) else ""


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
