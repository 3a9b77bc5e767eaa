"""EU AI Act Art. 50(2) on LangChain: the marker in ``response_metadata``, once per reply."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from persona_mw_langchain import PersonaChatModel

from persona_mw import Middleware
from persona_mw.compliance import PROVENANCE_FIELD

ADA = {"configurable": {"persona_user": "ada"}}


async def test_invoke_and_stream_carry_the_marker(mw: Middleware) -> None:
    inner = GenericFakeChatModel(messages=iter(["Whole answer.", "Streamed answer."]))
    chat = PersonaChatModel(inner=inner, middleware=mw)
    message = await chat.ainvoke("hi", config=ADA)
    marker = message.response_metadata[PROVENANCE_FIELD]
    assert marker["ai_generated"] is True and marker["model"] == chat.model_label

    merged = None
    async for chunk in chat.astream("hi", config=ADA):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    # on one chunk only: LangChain would concatenate a marker repeated on every chunk
    assert merged.response_metadata[PROVENANCE_FIELD] == marker
