"""The enforcement engine: one call's output, checked per choice and per field.

A host (``Middleware.acompletion`` / ``astream``, the server, the LiteLLM proxy plugin, the
LangChain wrapper) turns what the model said into :class:`Piece` s — one per choice per chunk,
or one per choice for a whole reply — and sends on only what the :class:`Release` s say. The
engine holds no host type: it sees text and opaque logprob entries, and keeps, per choice, one
filter chain for the content, one for ``reasoning_content`` and one per tool-call argument
value. Verdicts land on the call's context (``ctx.decisions``, ``ctx.notices``).

Per field:

* **content** streams through its chain with the hold-back; a block ends the choice with the
  rule's message and ``finish_reason="content_filter"``.
* **reasoning** streams through a chain of its own (``reasoning="filter"``) or is dropped
  (``reasoning="drop"``); a block in it ends the choice like one in the content.
* **tool-call arguments** are released whole, once the choice ends: each JSON string (and
  number) value is checked on its own and the arguments are re-encoded, so a redaction keeps
  them valid JSON; arguments that are not JSON are checked as text. A block drops the choice's
  tool calls and ends it with ``content_filter``.
* **logprobs** are held until the choice ends and released only when nothing in the choice was
  redacted or blocked (they would carry the withheld tokens).

What a host hands the engine and gets back (:class:`Piece`, :class:`Release`) is defined in
:mod:`.pieces`. Why this module is still over 400 lines: :class:`ReplyEnforcer` is one state
machine per choice (hold-back, block, review windows, tool calls, logprobs, out-of-band notices)
whose transitions must agree with each other; split by field, the rule "a block anywhere ends
the choice" would be restated in each part.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import PersonaError
from ..types import CallContext, Notice, ReviewsReply
from .chain import FilterChain, block_message, blocked_ending, notices_text, reply_text, then
from .checks import UnsettledChecks, cancel_checks, settle_checks
from .pieces import Piece, Release, ToolCallPiece

__all__ = [
    "Piece",
    "ReasoningMode",
    "Release",
    "ReplyEnforcer",
    "ToolCallPiece",
    "mark_failed",
]

#: What happens to ``reasoning_content``: checked like the content, or never sent.
ReasoningMode = Literal["filter", "drop"]

_ALTERING = ("redact", "block")
#: How much of a choice's checked text is kept as the next window's context.
_TAIL = 400


@dataclass
class _Call:
    kind: Literal["tool", "function"]
    index: int
    id: str | None = None
    name: str | None = None
    parts: list[str] = field(default_factory=list)


@dataclass
class _Choice:
    content: FilterChain
    reasoning: FilterChain | None
    calls: dict[tuple[str, int], _Call] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    altered: bool = False
    #: "before" notices were sent and no text yet: the blank line after them is owed.
    gap: bool = False
    started: bool = False
    finish_reason: str | None = None
    ended: bool = False
    #: Released by the filters, not yet checked by the model-backed rules (a reviewer's window).
    unchecked: str = ""
    #: The end of the model's text already checked and released (the next window's context).
    checked_tail: str = ""


@dataclass
class _Step:
    """One piece of a choice on its way through the engine: what the filters released, before
    the model-backed rules check it and the release is framed."""

    choice: _Choice
    out: Release
    piece: Piece
    whole: bool
    content: str
    calls: tuple[ToolCallPiece, ...]
    marks: int
    before: str
    started: float


class ReplyEnforcer:
    """The output side of one call (see the module docstring). Fresh per call, from
    :meth:`persona_mw.Middleware.enforcer`; a host drives it with :meth:`feed` per chunk per
    choice (or :meth:`whole` per choice), :meth:`end` when the upstream stops, and
    :meth:`close` however the call ends. When an input stage answered (``ctx.reply``), what is
    fed is that answer as the host delivered it: passed through unchecked, with the reply's
    finish_reason (:meth:`synthetic` makes it for hosts that do not call the model)."""

    def __init__(
        self,
        ctx: CallContext,
        open_chain: Callable[[], FilterChain],
        *,
        reasoning: ReasoningMode = "filter",
        review: ReviewsReply | None = None,
    ) -> None:
        self.ctx = ctx
        self.reasoning: ReasoningMode = reasoning
        self._open = open_chain
        self._review = review
        self._choices: dict[int, _Choice] = {}
        self._replay = ctx.reply is not None
        #: An input check that ran beside the model blocked: the model's reply is replaced.
        self._overruled = False
        self.filter_ms = 0.0

    # -- what a host asks --------------------------------------------------------------------

    @property
    def out_of_band(self) -> bool:
        """Notices go to a response field (and a header), not into the reply's text."""
        return self.ctx.notices_out_of_band

    @property
    def replayed(self) -> bool:
        """What is fed is an input stage's answer, not the model's (no model ran)."""
        return self._replay

    @property
    def done(self) -> bool:
        """Every choice seen so far has ended (and at least one was seen)."""
        return bool(self._choices) and all(c.ended for c in self._choices.values())

    @property
    def choices_seen(self) -> int:
        return len(self._choices)

    @property
    def any_blocked(self) -> bool:
        """Some choice was ended by a block of the output rules (a replayed answer to a blocked
        input is not one: it is passed on whole)."""
        return not self._replay and any(
            c.finish_reason == "content_filter" for c in self._choices.values()
        )

    def stopped(self, index: int) -> bool:
        """Choice ``index`` was ended by a block."""
        choice = self._choices.get(index)
        return choice is not None and choice.finish_reason == "content_filter"

    def notices(self) -> tuple[Notice, ...]:
        """The notices the host must show beside the reply (out of band); () when in band."""
        return tuple(self.ctx.notices) if self.out_of_band else ()

    # -- driving -----------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for the input checks still running beside the model call (model-backed
        detectors, ``ctx.pending``) and apply their verdicts. Every host awaits this before it
        feeds the first piece of the reply — :meth:`feed` and :meth:`whole` refuse while a check
        is pending — so no text is released before the verdict. When the model is slower than
        the checks this costs nothing; a late block replaces every choice of the model's reply
        with the input's answer (``ctx.reply``, ``finish_reason="content_filter"``)."""
        ctx = self.ctx
        if not ctx.pending:
            return
        started = time.perf_counter()
        await settle_checks(ctx)
        ctx.timings_ms["checks_wait"] = (time.perf_counter() - started) * 1000.0
        if ctx.reply is not None and not self._replay:
            self._overruled = True

    @property
    def reviews(self) -> bool:
        """Model-backed output rules check the reply: drive the engine with :meth:`afeed`,
        :meth:`awhole` and :meth:`aend` (the synchronous methods refuse)."""
        return self._review is not None

    def feed(self, index: int, piece: Piece) -> Release:
        """The next chunk of choice ``index``; returns what may be sent now."""
        self._synchronous("feed")
        return self._complete(self._begin(index, piece, whole=False))

    def whole(self, index: int, piece: Piece) -> Release:
        """A whole choice (not streamed): its checked replacement. A block replaces the whole
        text with the rule's message (nothing of the blocked text is kept)."""
        self._synchronous("whole")
        return self._whole(self._begin(index, _ended(piece), whole=True), piece)

    def end(self, finish_reason: str | None = None) -> list[Release]:
        """The upstream stopped: finish every choice left open, releasing what their filters
        held back, with ``finish_reason`` (a host whose stream reports only one choice's
        finish_reason — LiteLLM's — passes the one it saw)."""
        self._synchronous("end")
        return [
            self._complete(self._begin(i, p, whole=False))
            for i, p in self._open_ends(finish_reason)
        ]

    async def afeed(self, index: int, piece: Piece) -> Release:
        """:meth:`feed` for any call: settles the input checks still running first, and holds
        what the filters release until the model-backed output rules checked it (a window)."""
        await self.settle()
        return self._complete(await self._checked(self._begin(index, piece, whole=False)))

    async def awhole(self, index: int, piece: Piece) -> Release:
        """:meth:`whole` for any call (the model-backed output rules check the whole text)."""
        await self.settle()
        step = await self._checked(self._begin(index, _ended(piece), whole=True))
        return self._whole(step, piece)

    async def aend(self, finish_reason: str | None = None) -> list[Release]:
        """:meth:`end` for any call."""
        await self.settle()
        return [
            self._complete(await self._checked(self._begin(i, p, whole=False)))
            for i, p in self._open_ends(finish_reason)
        ]

    def synthetic(self) -> Release:
        """The answer of an input stage (``ctx.reply``) as choice 0, for a host that answers
        instead of calling the model."""
        ctx = self.ctx
        cancel_checks(ctx)  # answered without the model: their verdict is moot
        text = reply_text(ctx)
        choice = self._choice(0)
        choice.sent.append(text)
        choice.started = choice.ended = True
        choice.finish_reason = ctx.reply_finish_reason
        ctx.output_text = text
        ctx.finish_reason = ctx.reply_finish_reason
        return Release(
            0,
            content=text,
            finish_reason=ctx.reply_finish_reason,
            first=True,
            notices=self.notices(),
        )

    def close(self) -> None:
        """Leave the reply on the context: choice 0's text and finish reason (what the signals
        and the log see), the filter time, an estimate of the tokens when no usage came."""
        ctx = self.ctx
        cancel_checks(ctx)
        first = self._choices.get(0) or next(iter(self._choices.values()), None)
        if first is None:  # the model failed before saying anything
            return
        ctx.output_text = "".join(first.sent)
        ctx.finish_reason = first.finish_reason or None
        if self.any_blocked and not self._overruled:
            ctx.outcome = "filtered"
        ctx.timings_ms["output"] = ctx.timings_ms.get("output", 0.0) + self.filter_ms
        if not ctx.completion_tokens and not self._replay:
            text = "".join("".join(c.sent) for c in self._choices.values())
            ctx.completion_tokens = (len(text) + 3) // 4

    # -- inside ------------------------------------------------------------------------------

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            # the reasoning chain is opened when reasoning comes (most replies have none)
            choice = _Choice(content=self._open(), reasoning=None)
            self._choices[index] = choice
        return choice

    def _synchronous(self, method: str) -> None:
        if self._review is not None:
            raise UnsettledChecks(
                f"this call has model-backed output rules: drive the engine with "
                f"`await a{method}(...)`, not `{method}(...)` (the reply is held until they "
                "checked it)"
            )

    def _open_ends(self, finish_reason: str | None) -> list[tuple[int, Piece]]:
        return [
            (index, Piece(finish_reason=finish_reason or ""))
            for index, choice in list(self._choices.items())
            if not choice.ended
        ]

    def _whole(self, step: _Step | Release, piece: Piece) -> Release:
        release = self._complete(step)
        release.finish_reason = release.finish_reason or piece.finish_reason or "stop"
        return release

    def _begin(self, index: int, piece: Piece, *, whole: bool) -> _Step | Release:
        """The filters' part: what they release of ``piece`` (a finished Release when the
        choice is over, replayed or overruled)."""
        choice = self._choice(index)
        out = Release(index)
        if choice.ended:
            return out
        if self.ctx.pending:
            raise UnsettledChecks(
                "input checks are still running: await ReplyEnforcer.settle() before feeding "
                "the reply (a late block would otherwise be lost)"
            )
        if not choice.started:
            choice.started = out.first = True
        if self._replay:
            return self._replayed(choice, piece, out)
        if self._overruled:
            return self._overrule(choice, out)
        started = time.perf_counter()
        marks = len(self.ctx.decisions)
        before = notices_text(self.ctx, "before") if out.first else ""
        choice.gap = choice.gap or bool(before)
        reasoning = ""
        if whole:  # the complete text: one check, no hold-back (equal to feeding it, finishing)
            content = choice.content.whole(piece.content)
        else:
            content = choice.content.feed(piece.content) if piece.content else ""
        if piece.reasoning and self.reasoning == "filter" and not choice.content.stopped:
            if choice.reasoning is None:
                choice.reasoning = self._open()
            if whole:
                reasoning = choice.reasoning.whole(piece.reasoning)
            else:
                reasoning = choice.reasoning.feed(piece.reasoning)
        for call in piece.tool_calls:
            _buffer(choice, call)
        choice.logprobs.extend(piece.logprobs)
        calls: tuple[ToolCallPiece, ...] = ()
        if piece.finish_reason is not None and not self._blocked(choice):
            if not whole:
                content += choice.content.finish()
                if choice.reasoning is not None and not choice.content.stopped:
                    reasoning += choice.reasoning.finish()
            if not self._blocked(choice):
                calls = self._check_calls(choice)
        if whole and (content != piece.content):
            choice.altered = True
        out.reasoning = reasoning
        self.filter_ms += (time.perf_counter() - started) * 1000.0
        return _Step(choice, out, piece, whole, content, calls, marks, before, started)

    async def _checked(self, step: _Step | Release) -> _Step | Release:
        """The model-backed output rules' part: the text the filters released waits with the
        choice until a window of it is checked (all of it when the choice ends or is whole);
        a block ends the choice with what was checked before it."""
        review = self._review
        if review is None or isinstance(step, Release):
            return step
        choice = step.choice
        choice.unchecked += step.content
        final = step.whole or step.piece.finish_reason is not None or self._blocked(choice)
        released = ""
        while choice.unchecked:
            n = len(choice.unchecked) if step.whole else review.cut(choice.unchecked, final=final)
            if n <= 0:
                break
            window = choice.unchecked[:n]
            if await review.check(window, context=choice.checked_tail):
                choice.unchecked = ""
                choice.content = _Stopped()
                break
            released += window
            choice.checked_tail = (choice.checked_tail + window)[-_TAIL:]
            choice.unchecked = choice.unchecked[n:]
        step.content = released
        return step

    def _complete(self, step: _Step | Release) -> Release:
        """The release framed: notices before the first text and after the last, the block's
        ending, tool calls and logprobs on the choice's last release."""
        if isinstance(step, Release):
            return step
        choice, out, piece, content = step.choice, step.out, step.piece, step.content
        if len(self.ctx.decisions) > step.marks and any(
            d.action in _ALTERING for d in self.ctx.decisions[step.marks :]
        ):
            choice.altered = True
        # the blank line after the "before" notices goes with the first text, so a reply that
        # stays empty reads as the notices alone (as ``with_notices`` frames it)
        prefix = step.before + ("\n\n" if content and choice.gap else "")
        choice.gap = choice.gap and not content
        if self._blocked(choice):
            self._end_blocked(choice, out, prefix, content, whole=step.whole)
        elif piece.finish_reason is not None:
            after = notices_text(self.ctx, "after")
            so_far = "".join(choice.sent) + prefix + content
            out.content = prefix + content + (then(so_far, after) if after else "")
            out.tool_calls = step.calls
            self._end(choice, out, piece.finish_reason or None)
        else:
            out.content = prefix + content
        choice.sent.append(out.content)
        return out

    def _blocked(self, choice: _Choice) -> bool:
        return choice.content.stopped or (choice.reasoning is not None and choice.reasoning.stopped)

    def _end_blocked(
        self, choice: _Choice, out: Release, prefix: str, released: str, *, whole: bool
    ) -> None:
        ctx = self.ctx
        choice.altered = True
        ctx.outcome = "filtered"
        if whole:
            before = notices_text(ctx, "before")
            after = notices_text(ctx, "after")
            out.content = "\n\n".join(p for p in (before, block_message(ctx), after) if p)
            out.reasoning = ""
        else:
            so_far = "".join(choice.sent) + prefix + released
            out.content = prefix + released + blocked_ending(ctx, so_far)
        self._end(choice, out, "content_filter")

    def _end(self, choice: _Choice, out: Release, finish_reason: str | None) -> None:
        choice.ended = True
        choice.finish_reason = finish_reason
        out.finish_reason = finish_reason
        if choice.altered:
            out.logprobs_dropped = bool(choice.logprobs)
        elif choice.logprobs:
            out.logprobs = tuple(choice.logprobs)
        out.notices = self.notices()

    def _replayed(self, choice: _Choice, piece: Piece, out: Release) -> Release:
        out.content = piece.content
        out.reasoning = piece.reasoning
        out.tool_calls = piece.tool_calls
        choice.sent.append(piece.content)
        if piece.finish_reason is not None:
            self._end(choice, out, self.ctx.reply_finish_reason)
        return out

    def _overrule(self, choice: _Choice, out: Release) -> Release:
        """A late input block: the choice becomes the input's answer, whatever the model said
        (its text, reasoning, tool calls and logprobs are dropped)."""
        text = reply_text(self.ctx) if out.first else ""
        choice.altered = True
        choice.sent.append(text)
        out.content = text
        self._end(choice, out, self.ctx.reply_finish_reason)
        return out

    def _check_calls(self, choice: _Choice) -> tuple[ToolCallPiece, ...]:
        """The choice's tool calls with checked arguments; () and the choice blocked (its
        content chain stopped on the block's decision) when any argument is blocked."""
        checked = []
        for call in choice.calls.values():
            arguments, stopped = self._check_arguments("".join(call.parts))
            if stopped:
                choice.content = _Stopped()
                return ()
            checked.append(ToolCallPiece(call.index, call.id, call.name, arguments, call.kind))
        return tuple(checked)

    def _check_arguments(self, arguments: str) -> tuple[str, bool]:
        """Arguments checked value by value, re-encoded when a redaction changed one."""
        try:
            value = json.loads(arguments)
        except ValueError:
            return self._check_text(arguments)
        blocked = False

        def walk(v: Any) -> Any:
            nonlocal blocked
            if blocked:
                return v
            if isinstance(v, str):
                text, blocked = self._check_text(v)
                return text
            if isinstance(v, bool) or v is None:
                return v
            if isinstance(v, int | float):
                literal = json.dumps(v)
                text, blocked = self._check_text(literal)
                return v if text == literal else text  # a redacted number becomes a string
            if isinstance(v, list):
                return [walk(x) for x in v]
            if isinstance(v, dict):
                return {walk(k): walk(x) for k, x in v.items()}
            return v

        new = walk(value)
        if blocked:
            return "", True
        return (arguments if new == value else json.dumps(new, ensure_ascii=False)), False

    def _check_text(self, text: str) -> tuple[str, bool]:
        chain = self._open()
        released = chain.whole(text) if text else ""
        return released, chain.stopped


class _Stopped(FilterChain):
    """The content chain of a choice a tool-call block ended."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def stopped(self) -> bool:
        return True


def _ended(piece: Piece) -> Piece:
    """A whole choice always ends: with the model's finish_reason, or "stop"."""
    if piece.finish_reason is not None:
        return piece
    return Piece(piece.content, piece.reasoning, piece.tool_calls, piece.logprobs, "stop")


def _buffer(choice: _Choice, piece: ToolCallPiece) -> None:
    key = (piece.kind, piece.index)
    call = choice.calls.get(key)
    if call is None:
        call = choice.calls[key] = _Call(piece.kind, piece.index)
    call.id = call.id or piece.id
    call.name = call.name or piece.name
    if piece.arguments:
        call.parts.append(piece.arguments)


def mark_failed(ctx: CallContext, exc: BaseException) -> None:
    """Record on ``ctx`` how a call ended early: ``cancelled`` (the caller went away),
    ``error`` (with the error's name; a PersonaError's message, which carries no user text).
    A call already ``filtered`` or ``blocked`` keeps that outcome when it is then closed."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        if ctx.outcome not in ("filtered", "blocked"):
            ctx.outcome = "cancelled"
    elif isinstance(exc, Exception):
        ctx.outcome = "error"
        ctx.error = str(exc) if isinstance(exc, PersonaError) else type(exc).__name__
