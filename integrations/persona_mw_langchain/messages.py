"""LangChain messages ⇄ persona_mw's OpenAI-format messages, converted once at the edge.

persona_mw's stages read and rewrite OpenAI-style dicts. Going in, every LangChain message
becomes one dict. Coming back, a dict the stages left untouched maps back to the very message
the application passed (keeping ids, ``additional_kwargs`` and provider fields); only the dicts
the stages made or changed (the personalised system message) are converted anew. "Untouched"
means the same dict with the same content, so a stage that edits a dict in place is seen.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import convert_to_messages, convert_to_openai_messages

from persona_mw.types import Message

__all__ = ["USER_KEY", "Conversation"]

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
