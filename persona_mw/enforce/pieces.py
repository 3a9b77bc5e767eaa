"""What a host hands the enforcement engine and what it may send back: :class:`Piece` (what the
model said for one choice: a chunk or a whole reply), :class:`ToolCallPiece` and
:class:`Release` (what may go out now). Host types (LiteLLM's, LangChain's) are converted to
and from these at each host's edge; the engine (:mod:`.engine`) sees only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..types import Notice

__all__ = ["Piece", "Release", "ToolCallPiece"]


@dataclass(frozen=True, slots=True)
class ToolCallPiece:
    """A tool call of one choice, or a fragment of one (a stream): its ``index`` among the
    choice's calls; ``id`` and ``name`` when this piece carries them; ``arguments`` (a fragment
    in a stream, the whole arguments in a Release). ``kind="function"`` is the legacy top-level
    ``function_call``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    kind: Literal["tool", "function"] = "tool"


@dataclass(frozen=True, slots=True)
class Piece:
    """What the model said for one choice: one chunk of a stream, or a whole reply. ``logprobs``
    are the host's per-token entries, opaque to the engine; ``finish_reason`` set ends it."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallPiece, ...] = ()
    logprobs: tuple[Any, ...] = ()
    finish_reason: str | None = None


@dataclass(slots=True)
class Release:
    """What the host may send now for choice ``index``. In a stream: the delta. For a whole
    reply: the choice's new content, reasoning, tool calls and logprobs."""

    index: int
    content: str = ""
    reasoning: str = ""
    #: Complete tool calls with their checked arguments (only in a choice's last release).
    tool_calls: tuple[ToolCallPiece, ...] = ()
    #: The choice's logprob entries, on its last release, when nothing was redacted or blocked.
    logprobs: tuple[Any, ...] | None = None
    #: Set on the choice's last release: the model's reason, or ``"content_filter"``.
    finish_reason: str | None = None
    #: The first release of this choice (a stream sends ``role: assistant`` with it).
    first: bool = False
    #: Out of band only, on a choice's last release: every notice of the call so far.
    notices: tuple[Notice, ...] = ()
    #: The choice's logprobs were withheld because something in it was redacted or blocked.
    logprobs_dropped: bool = False

    @property
    def empty(self) -> bool:
        """Nothing to send (everything is held back)."""
        return not (
            self.content
            or self.reasoning
            or self.tool_calls
            or self.logprobs
            or self.finish_reason
            or self.first
        )
