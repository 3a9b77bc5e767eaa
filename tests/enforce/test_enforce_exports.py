"""The engine's public names, pinned: hosts (the server, the LiteLLM plugin, LangChain) build
on them."""

from __future__ import annotations

import persona_mw.enforce as enforce

PUBLIC = {
    "NOTICES_FIELD",
    "NOTICES_HEADER",
    "FilterChain",
    "NoticePlacement",
    "Piece",
    "ReasoningMode",
    "Release",
    "ReplyEnforcer",
    "ToolCallPiece",
    "UnsettledChecks",
    "block_message",
    "blocked_ending",
    "cancel_checks",
    "enforce_response",
    "enforce_stream",
    "mark_failed",
    "notices_json",
    "notices_out_of_band",
    "notices_text",
    "reply_text",
    "synthetic_chunks",
    "synthetic_response",
    "with_notices",
}


def test_the_engines_public_names() -> None:
    assert set(enforce.__all__) == PUBLIC
    assert all(hasattr(enforce, name) for name in PUBLIC)


def test_notices_go_out_of_band_for_structured_requests() -> None:
    """The pure placement decision, as a table."""
    cases = [
        ({}, "auto", False),
        ({"response_format": {"type": "text"}}, "auto", False),
        ({"response_format": {"type": "json_object"}}, "auto", True),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "auto", True),
        ({"tools": [{"type": "function"}]}, "auto", True),
        ({"functions": [{"name": "f"}]}, "auto", True),
        ({"tools": []}, "auto", False),
        ({"response_format": {"type": "json_object"}}, "in_band", False),
        ({}, "out_of_band", True),
    ]
    for request, placement, expected in cases:
        assert enforce.notices_out_of_band(request, placement) is expected, (request, placement)
