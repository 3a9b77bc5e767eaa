"""Output filters in a row, and the texts a host frames a reply with (notices, block message)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..types import CallContext, OutputFilter

__all__ = [
    "FilterChain",
    "NoticePlacement",
    "block_message",
    "blocked_ending",
    "notices_out_of_band",
    "notices_text",
    "reply_text",
    "with_notices",
]

#: Where a call's notices go: ``"auto"`` puts them out of band when the request asks for a
#: structured reply (``response_format`` json_object / json_schema, ``tools``, ``functions``).
NoticePlacement = Literal["auto", "in_band", "out_of_band"]


class FilterChain:
    """Output filters in a row: each one's released text is the next one's input."""

    def __init__(self, filters: Sequence[OutputFilter]) -> None:
        self.filters = list(filters)

    @property
    def stopped(self) -> bool:
        return any(f.stopped for f in self.filters)

    def feed(self, text: str) -> str:
        for i, f in enumerate(self.filters):
            text = f.feed(text) if text else ""
            if f.stopped:
                return self._drain(i + 1, text)
        return text

    def whole(self, text: str) -> str:
        """A complete text at once: what ``feed(text) + finish()`` returns, checked in one pass
        by each filter that can check a whole text (:class:`~persona_mw.types.ChecksWholeText`),
        without the hold-back bookkeeping a stream needs."""
        for i, f in enumerate(self.filters):
            check = getattr(f, "check_whole", None)
            if check is not None:
                text = check(text)
            else:
                text = (f.feed(text) if text else "") + ("" if f.stopped else f.finish())
            if f.stopped:
                return self._drain(i + 1, text)
        return text

    def finish(self) -> str:
        text = ""
        for i, f in enumerate(self.filters):
            if text:
                text = f.feed(text)
            if not f.stopped:
                text += f.finish()
            if f.stopped:
                return self._drain(i + 1, text)
        return text

    def _drain(self, start: int, text: str) -> str:
        """A filter stopped: what it released before the stop still passes the later filters."""
        for f in self.filters[start:]:
            text = (f.feed(text) if text else "") + ("" if f.stopped else f.finish())
            if f.stopped:
                break
        return text


def notices_out_of_band(request: Mapping[str, Any], placement: NoticePlacement = "auto") -> bool:
    """Pure: whether a call's notices must stay out of the reply's text. ``request`` holds the
    call's OpenAI parameters; a reply that must parse (JSON mode, a JSON schema) or that calls
    tools would be corrupted by a notice in its content."""
    if placement != "auto":
        return placement == "out_of_band"
    response_format = request.get("response_format")
    kind = (
        response_format.get("type")
        if isinstance(response_format, Mapping)
        else getattr(response_format, "type", None)
        if response_format is not None
        else None
    )
    if response_format is not None and kind != "text":
        # a pydantic class (LiteLLM / openai ``.parse``) or a json_object / json_schema dict
        return True
    return bool(request.get("tools") or request.get("functions"))


def block_message(ctx: CallContext) -> str:
    """The user-facing message of the block that stopped the text (what replaces it): on the
    reply, the block that comes first in it; on the input, the last. A stream stops at the first
    block it meets, so a whole reply and a streamed one end with the same message when two
    rules block one reply (a sentence a minor must not read, then a relationship-seeking one)."""
    blocks = [d for d in ctx.decisions if d.action == "block" and d.message]
    if not blocks:
        return "[response withheld by a content policy]"
    stopped = blocks[-1]
    if stopped.stage == "output":
        stopped = min(
            (d for d in blocks if d.stage == "output"),
            key=lambda d: min((span.start for span in d.spans), default=0),
        )
    assert stopped.message is not None
    return stopped.message


def notices_text(ctx: CallContext, position: str) -> str:
    """The notices to put ``"before"`` or ``"after"`` the reply, joined; nothing when the call's
    notices travel out of band."""
    if ctx.notices_out_of_band:
        return ""
    return "\n\n".join(n.text for n in ctx.notices if n.position == position)


def with_notices(ctx: CallContext, text: str) -> str:
    """``text`` framed by the call's notices (unchanged when they travel out of band)."""
    parts = [notices_text(ctx, "before"), text, notices_text(ctx, "after")]
    return "\n\n".join(p for p in parts if p)


def reply_text(ctx: CallContext) -> str:
    """The text of an input stage's answer (``ctx.reply``) as the user gets it: framed by the
    notices unless they travel out of band. What a host sends instead of calling the model."""
    return with_notices(ctx, ctx.reply or "")


def blocked_ending(ctx: CallContext, so_far: str) -> str:
    """How a streamed reply stopped by a block ends, after the text ``so_far`` the user already
    has: the rule's message (after a blank line, unless there is no text yet or it ends with
    one) and the notices after the reply — crisis resources survive a block. The whole text
    then reads as ``with_notices`` frames a whole blocked reply (except that text already
    ending in a blank line gets no second one)."""
    after = notices_text(ctx, "after")
    return then(so_far, block_message(ctx)) + (f"\n\n{after}" if after else "")


def then(so_far: str, text: str) -> str:
    """``text`` to follow ``so_far`` as its own paragraph: one blank line between them, none
    before the first text or after text that already ends with one."""
    return ("\n\n" if so_far and not so_far.endswith("\n\n") else "") + text
