"""LiteLLM's response types on the engine: what ``Middleware.acompletion`` / ``astream`` and the
LiteLLM proxy plugin (both handed LiteLLM objects) run. Conversion only: every verdict is the
engine's (:class:`~persona_mw.enforce.engine.ReplyEnforcer`)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from ..compliance.marking import PROVENANCE_FIELD, provenance
from ..types import CallContext, Notice
from .engine import ReplyEnforcer
from .pieces import Piece, Release, ToolCallPiece

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream

__all__ = [
    "NOTICES_FIELD",
    "enforce_response",
    "enforce_stream",
    "notices_json",
    "record_usage",
    "synthetic_chunks",
    "synthetic_response",
]

#: The response attribute (Python) and JSON field (server) that carries notices out of band.
NOTICES_FIELD = "persona_notices"


def notices_json(notices: tuple[Notice, ...] | list[Notice]) -> list[dict[str, str]]:
    """Notices as the JSON the server sends and ``persona_notices`` holds."""
    return [{"text": n.text, "source": n.source, "position": n.position} for n in notices]


async def enforce_response(enforcer: ReplyEnforcer, response: ModelResponse) -> ModelResponse:
    """Every choice of a whole reply through the engine, in place; usage onto the context. The
    input checks still running are settled first, and the model-backed output rules check each
    choice's text."""
    ctx = enforcer.ctx
    for choice in response.choices:
        message = choice.message
        release = await enforcer.awhole(choice.index, _piece(message, choice))
        _apply_whole(choice, release, enforcer)
    if enforcer.out_of_band:
        setattr(response, NOTICES_FIELD, notices_json(enforcer.notices()))
    setattr(response, PROVENANCE_FIELD, provenance(ctx).to_json())
    if enforcer.replayed:
        response.usage = _no_usage()  # LiteLLM's mock_response invents some; no model ran
    else:
        record_usage(ctx, getattr(response, "usage", None))
    return response


async def enforce_stream(
    enforcer: ReplyEnforcer,
    upstream: AsyncIterator[ModelResponseStream],
    *,
    model_started: float | None = None,
) -> AsyncGenerator[ModelResponseStream, None]:
    """A LiteLLM stream through the engine, chunk by chunk; closes ``upstream`` however it ends.

    Out of band, the first chunk carries the notices known when the reply starts and every
    chunk that ends a choice carries all of them (``persona_notices``)."""
    ctx = enforcer.ctx
    header: dict[str, Any] = {}
    sent_first = False
    last_reason: str | None = None
    try:
        async for piece in upstream:
            if ctx.pending:  # nothing, not even a usage chunk, before the input checks' verdict
                await enforcer.settle()
            if not header:
                header = {"id": piece.id, "model": piece.model, "created": piece.created}
                if model_started is not None:
                    ctx.timings_ms["first_token"] = (time.perf_counter() - model_started) * 1e3
            usage = getattr(piece, "usage", None)
            if enforcer.replayed and usage is not None:
                piece.usage = _no_usage()
            elif usage is not None:
                record_usage(ctx, usage)
            if not piece.choices:  # the usage chunk (stream_options.include_usage)
                yield piece
                continue
            kept = []
            for choice in piece.choices:
                last_reason = choice.finish_reason or last_reason
                release = await enforcer.afeed(choice.index, _piece(choice.delta, choice))
                if _apply_delta(choice, release) or usage is not None:
                    kept.append(choice)
            if kept:
                piece.choices = kept
                _mark(piece, enforcer, first=not sent_first)
                sent_first = True
                yield piece
            if enforcer.any_blocked and enforcer.done and enforcer.choices_seen >= ctx.choices:
                return  # stops the model call: nothing more of this reply may be sent
        # LiteLLM's stream wrapper passes on the first finish_reason only: the upstream's
        # other choices end with the same one
        left = await enforcer.aend(last_reason)
        if left:
            yield _chunk(header, left, enforcer)
    finally:
        if model_started is not None:
            ctx.timings_ms["model"] = (time.perf_counter() - model_started) * 1e3
        aclose = getattr(upstream, "aclose", None)
        if aclose is not None:
            await aclose()


# -- conversion -------------------------------------------------------------------------------


def _mark(piece: Any, enforcer: ReplyEnforcer, *, first: bool) -> None:
    """The provenance marker on the first chunk; out of band, the notices on the first chunk and
    on each chunk that ends a choice."""
    if first:
        setattr(piece, PROVENANCE_FIELD, provenance(enforcer.ctx).to_json())
    if not enforcer.out_of_band:
        return
    ends = any(c.finish_reason is not None for c in piece.choices)
    if first or ends:
        setattr(piece, NOTICES_FIELD, notices_json(enforcer.notices()))


def _piece(message: Any, choice: Any) -> Piece:
    calls: list[ToolCallPiece] = []
    for i, call in enumerate(getattr(message, "tool_calls", None) or ()):
        fn = getattr(call, "function", None)
        index = getattr(call, "index", None)
        calls.append(
            ToolCallPiece(
                index=index if isinstance(index, int) else i,
                id=getattr(call, "id", None),
                name=getattr(fn, "name", None),
                arguments=getattr(fn, "arguments", None) or "",
            )
        )
    legacy = getattr(message, "function_call", None)
    if legacy is not None:
        calls.append(
            ToolCallPiece(
                0,
                name=getattr(legacy, "name", None),
                arguments=getattr(legacy, "arguments", None) or "",
                kind="function",
            )
        )
    logprobs = getattr(choice, "logprobs", None)
    entries = getattr(logprobs, "content", None) if logprobs is not None else None
    if entries is None and isinstance(logprobs, dict):
        entries = logprobs.get("content")
    content = getattr(message, "content", None)
    return Piece(
        content=content if isinstance(content, str) else "",
        reasoning=getattr(message, "reasoning_content", None) or "",
        tool_calls=tuple(calls),
        logprobs=tuple(entries or ()),
        finish_reason=getattr(choice, "finish_reason", None),
    )


def _logprobs(release: Release) -> Any:
    if not release.logprobs:
        return None
    from litellm.types.utils import ChoiceLogprobs

    return ChoiceLogprobs(content=list(release.logprobs))


def _apply_whole(choice: Any, release: Release, enforcer: ReplyEnforcer) -> None:
    from litellm.types.utils import ChatCompletionMessageToolCall, Function, FunctionCall

    message = choice.message
    had_text = isinstance(message.content, str) and bool(message.content)
    if release.content or had_text or enforcer.ctx.reply is not None:
        message.content = release.content or None
    if getattr(message, "reasoning_content", None) is not None:
        message.reasoning_content = release.reasoning or None
    tools = [c for c in release.tool_calls if c.kind == "tool"]
    legacy = [c for c in release.tool_calls if c.kind == "function"]
    if getattr(message, "tool_calls", None) or tools:
        message.tool_calls = [
            ChatCompletionMessageToolCall(
                id=c.id, type="function", function=Function(name=c.name, arguments=c.arguments)
            )
            for c in tools
        ] or None
    if getattr(message, "function_call", None) is not None or legacy:
        message.function_call = (
            FunctionCall(name=legacy[0].name, arguments=legacy[0].arguments) if legacy else None
        )
    choice.finish_reason = release.finish_reason
    if hasattr(choice, "logprobs"):
        choice.logprobs = _logprobs(release)


def _apply_delta(choice: Any, release: Release) -> bool:
    """The chunk's choice rewritten to what may be sent; False when nothing may."""
    from litellm.types.utils import ChatCompletionDeltaToolCall, Function, FunctionCall

    delta = choice.delta
    delta.content = release.content or None
    if getattr(delta, "reasoning_content", None) is not None or release.reasoning:
        delta.reasoning_content = release.reasoning or None
    tools = [c for c in release.tool_calls if c.kind == "tool"]
    legacy = [c for c in release.tool_calls if c.kind == "function"]
    delta.tool_calls = [
        ChatCompletionDeltaToolCall(
            id=c.id,
            type="function",
            index=c.index,
            function=Function(name=c.name, arguments=c.arguments),
        )
        for c in tools
    ] or None
    delta.function_call = (
        FunctionCall(name=legacy[0].name, arguments=legacy[0].arguments) if legacy else None
    )
    if release.first and not delta.role:
        delta.role = "assistant"
    choice.finish_reason = release.finish_reason
    choice.logprobs = _logprobs(release)
    return not release.empty


def _chunk(header: dict[str, Any], releases: list[Release], enforcer: ReplyEnforcer) -> Any:
    """A chunk we make: the releases of choices the upstream left open."""
    from litellm import ModelResponseStream
    from litellm.types.utils import Delta, StreamingChoices

    choices = []
    for release in releases:
        choice = StreamingChoices(index=release.index, delta=Delta())
        _apply_delta(choice, release)
        choices.append(choice)
    piece = ModelResponseStream(**header, choices=choices)
    _mark(piece, enforcer, first=False)
    return piece


def synthetic_response(enforcer: ReplyEnforcer) -> ModelResponse:
    """The answer an input stage gave instead of the model (e.g. a block)."""
    from litellm import ModelResponse
    from litellm.types.utils import Choices, Message

    ctx = enforcer.ctx
    release = enforcer.synthetic()
    response = ModelResponse(
        id=f"chatcmpl-{ctx.request_id}",
        model=ctx.model,
        choices=[
            Choices(
                index=0,
                message=Message(role="assistant", content=release.content),
                finish_reason=release.finish_reason,
            )
        ],
        usage=_no_usage(),
    )
    if enforcer.out_of_band:
        setattr(response, NOTICES_FIELD, notices_json(release.notices))
    setattr(response, PROVENANCE_FIELD, provenance(ctx).to_json())
    return response


def synthetic_chunks(enforcer: ReplyEnforcer) -> list[ModelResponseStream]:
    """:func:`synthetic_response`, as a stream: the text, then the finish_reason."""
    from litellm import ModelResponseStream
    from litellm.types.utils import Delta, StreamingChoices

    ctx = enforcer.ctx
    release = enforcer.synthetic()
    header = {"id": f"chatcmpl-{ctx.request_id}", "model": ctx.model}
    chunks = [
        ModelResponseStream(
            **header,
            choices=[
                StreamingChoices(index=0, delta=Delta(content=release.content, role="assistant"))
            ],
        ),
        ModelResponseStream(
            **header,
            choices=[StreamingChoices(index=0, delta=Delta(), finish_reason=release.finish_reason)],
        ),
    ]
    if enforcer.out_of_band:
        for chunk in chunks:
            setattr(chunk, NOTICES_FIELD, notices_json(release.notices))
    setattr(chunks[0], PROVENANCE_FIELD, provenance(ctx).to_json())
    return chunks


def record_usage(ctx: CallContext, usage: Any) -> None:
    if usage is not None:
        ctx.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        ctx.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)


def _no_usage() -> Any:
    from litellm.types.utils import Usage

    return Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
