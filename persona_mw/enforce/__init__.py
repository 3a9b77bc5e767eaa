"""The one enforcement engine every host drives (see ``ENGINE`` in docs/architecture.md).

:class:`ReplyEnforcer` checks one call's output per choice and per field; hosts convert their
own chunk types to :class:`Piece` and send what each :class:`Release` says. :mod:`.litellm`
does that for LiteLLM's types (the core and the LiteLLM proxy plugin).
"""

from __future__ import annotations

from .chain import (
    FilterChain,
    NoticePlacement,
    block_message,
    blocked_ending,
    notices_out_of_band,
    notices_text,
    reply_text,
    with_notices,
)
from .checks import UnsettledChecks, cancel_checks
from .engine import ReasoningMode, ReplyEnforcer, mark_failed
from .litellm import (
    NOTICES_FIELD,
    enforce_response,
    enforce_stream,
    notices_json,
    synthetic_chunks,
    synthetic_response,
)
from .pieces import Piece, Release, ToolCallPiece

__all__ = [
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
]

#: The HTTP header (server) that carries the notices out of band: JSON, ASCII-escaped.
NOTICES_HEADER = "X-Persona-Notices"
