"""One call of :class:`~persona_mw_langchain.PersonaChatModel`, LangChain's types on the
enforcement engine: the messages the stages left, the reply's messages and chunks converted to
the engine's :class:`~persona_mw.enforce.Piece` and back from its
:class:`~persona_mw.enforce.Release`. Every verdict is the engine's; this only converts, and
keeps LangChain's rule that exactly one chunk of a stream carries the finish reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Self, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from persona_mw import CallContext, Middleware
from persona_mw.compliance import PROVENANCE_FIELD, provenance
from persona_mw.enforce import (
    NOTICES_FIELD,
    Piece,
    Release,
    ReplyEnforcer,
    ToolCallPiece,
    mark_failed,
    notices_json,
)

from ._calls import begin, finish, ms_since, run_input_stages
from .messages import Conversation, reasoning_blocks, reasoning_of, tool_pieces

__all__ = ["Call", "chunk_of", "start_call"]

_FINISH = "finish_reason"


async def start_call(
    mw: Middleware,
    messages: list[BaseMessage],
    *,
    user: str,
    model: str,
    stream: bool,
    request_id: str | None,
    request: Mapping[str, Any],
) -> Call:
    """Load the profile and run the input stages on ``messages``; a failure is recorded before
    it is raised. ``request`` (the call's bound kwargs: ``tools``, ``response_format``) decides
    whether notices go out of band."""
    conversation = Conversation(messages)
    ctx = await begin(
        mw,
        user=user,
        model=model,
        messages=conversation.wire,
        stream=stream,
        request_id=request_id,
        request=request,
    )
    try:
        await run_input_stages(mw, ctx)
    except BaseException as exc:
        mark_failed(ctx, exc)
        await finish(mw, ctx)
        raise
    return Call(mw, ctx, conversation)


class Call:
    """One call after its input stages. ``async with`` it around the model call: leaving the
    block records the call (the finish stages and the request event), and an exception
    leaving it is recorded first (outcome ``error``, or ``cancelled`` for a consumer that
    stopped a stream early)."""

    def __init__(self, mw: Middleware, ctx: CallContext, conversation: Conversation) -> None:
        self.mw = mw
        self.ctx = ctx
        self.conversation = conversation
        self.enforcer: ReplyEnforcer = mw.enforcer(ctx)
        self.first = True
        self.marked = False

    def _marker(self) -> dict[str, Any] | None:
        """The provenance marker, on a stream's first chunk only: LangChain concatenates the
        string values of the chunks' metadata."""
        if self.marked:
            return None
        self.marked = True
        return provenance(self.ctx).to_json()

    @property
    def answered(self) -> bool:
        """An input stage answered (a block): no model call."""
        return self.ctx.reply is not None

    @property
    def prompt(self) -> list[BaseMessage]:
        return self.conversation.to_langchain(self.ctx.prompt_messages)

    def synthetic(self) -> ChatResult:
        release = self.enforcer.synthetic()
        message = AIMessage(
            content=release.content,
            response_metadata=_metadata_of(release, {}, provenance(self.ctx).to_json()),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def result(self, result: ChatResult, started: float) -> ChatResult:
        """Every generation (choice) of a whole reply through the engine."""
        self.ctx.timings_ms["model"] = ms_since(started)
        generations: list[ChatGeneration] = []
        for index, generation in enumerate(result.generations):
            message = generation.message
            info = dict(generation.generation_info or {})
            metadata = dict(message.response_metadata)
            reason = metadata.pop(_FINISH, None) or info.pop(_FINISH, None)
            calls = tool_pieces(message)
            reasoning = reasoning_of(message)
            release = await self.enforcer.awhole(
                index,
                Piece(
                    content=message.text,
                    reasoning=reasoning,
                    tool_calls=calls,
                    logprobs=_logprobs(info, metadata),
                    finish_reason=reason,
                ),
            )
            _restore_logprobs(release, metadata)
            update: dict[str, Any] = {
                "response_metadata": _metadata_of(release, metadata, provenance(self.ctx).to_json())
            }
            # reasoning blocks in the content list stay only as the model wrote them (their
            # signatures cover them); checked text that differs replaces the list with the text
            blocks = bool(reasoning_blocks(message)) and release.reasoning != reasoning
            if release.content != message.text or blocks:
                update["content"] = release.content
            update["additional_kwargs"] = _kwargs_of(release, message)
            if blocks and release.reasoning:
                update["additional_kwargs"]["reasoning_content"] = release.reasoning
            if isinstance(message, AIMessage) and (calls or message.tool_calls):
                update.update(_tool_calls_of(release, len(message.tool_calls)))
            generations.append(
                ChatGeneration(
                    message=message.model_copy(update=update), generation_info=info or None
                )
            )
            _usage(self.ctx, getattr(message, "usage_metadata", None))
        if not self.ctx.prompt_tokens and not self.ctx.completion_tokens:
            usage = (result.llm_output or {}).get("token_usage") or {}
            self.ctx.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.ctx.completion_tokens = int(usage.get("completion_tokens") or 0)
        return ChatResult(generations=generations, llm_output=result.llm_output)

    async def feed(self, piece: ChatGenerationChunk, started: float) -> list[ChatGenerationChunk]:
        """One upstream chunk (LangChain streams carry choice 0 only) through the engine."""
        if self.first:
            self.first = False
            self.ctx.timings_ms["first_token"] = ms_since(started)
        message = piece.message
        usage = getattr(message, "usage_metadata", None)
        _usage(self.ctx, usage)
        info = dict(piece.generation_info or {})
        metadata = dict(message.response_metadata)
        reason = metadata.pop(_FINISH, None) or info.pop(_FINISH, None)
        chunks = [
            ToolCallPiece(
                index=_index(c.get("index"), i),
                id=c.get("id"),
                name=c.get("name"),
                arguments=c.get("args") or "",
            )
            for i, c in enumerate(getattr(message, "tool_call_chunks", None) or ())
        ]
        release = await self.enforcer.afeed(
            0,
            Piece(
                content=message.text,
                reasoning=reasoning_of(message),
                tool_calls=tuple(chunks),
                logprobs=_logprobs(info, metadata),
                finish_reason=reason,
            ),
        )
        if release.empty and not (usage or metadata or info):
            return []
        return [self._chunk(release, metadata, info, usage, message.id)]

    async def end(self, started: float) -> list[ChatGenerationChunk]:
        """The upstream ended without a finish reason: what the filters held back (and, for a
        stream that said nothing, the notices)."""
        self.ctx.timings_ms["model"] = ms_since(started)
        if not self.enforcer.choices_seen:
            return [self._chunk(await self.enforcer.afeed(0, Piece(finish_reason="")), {}, {})]
        return [
            self._chunk(release, {}, {})
            for release in await self.enforcer.aend()
            if not release.empty
        ]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        """The reply's text, finish reason and tokens onto the context, then the finish stages
        and the request event."""
        if error is not None:
            mark_failed(self.ctx, error)
        self.enforcer.close()
        await finish(self.mw, self.ctx)

    def _chunk(
        self,
        release: Release,
        metadata: dict[str, Any],
        info: dict[str, Any],
        usage: Any = None,
        message_id: str | None = None,
    ) -> ChatGenerationChunk:
        _restore_logprobs(release, metadata)
        kwargs: dict[str, Any] = {}
        if release.reasoning:
            kwargs["reasoning_content"] = release.reasoning
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=release.content,
                additional_kwargs=kwargs,
                response_metadata=_metadata_of(release, metadata, self._marker()),
                tool_call_chunks=[
                    {"name": c.name, "args": c.arguments, "id": c.id, "index": c.index}
                    for c in release.tool_calls
                    if c.kind == "tool"
                ],
                usage_metadata=usage,
                id=message_id,
            ),
            generation_info=info or None,
        )


def _usage(ctx: CallContext, usage: Any) -> None:
    if usage:
        ctx.prompt_tokens += int(usage.get("input_tokens") or 0)
        ctx.completion_tokens += int(usage.get("output_tokens") or 0)


def _index(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _logprobs(info: dict[str, Any], metadata: dict[str, Any]) -> tuple[Any, ...]:
    """The per-token entries, held by the engine (taken out of the chunk until released)."""
    value = info.pop("logprobs", None) or metadata.pop("logprobs", None)
    entries = value.get("content") if isinstance(value, dict) else value
    return tuple(entries) if isinstance(entries, list) else ()


def _restore_logprobs(release: Release, metadata: dict[str, Any]) -> None:
    """Released logprobs go back where LangChain keeps them; withheld ones stay out."""
    if release.logprobs:
        metadata["logprobs"] = {"content": list(release.logprobs)}


def _metadata_of(
    release: Release, metadata: dict[str, Any], marker: dict[str, Any] | None
) -> dict[str, Any]:
    out = dict(metadata)
    if release.finish_reason:
        out[_FINISH] = release.finish_reason
    if marker is not None:
        out[PROVENANCE_FIELD] = marker
    if release.notices:
        out[NOTICES_FIELD] = notices_json(release.notices)
    return out


def _tool_calls_of(release: Release, valid: int) -> dict[str, Any]:
    """``tool_calls`` / ``invalid_tool_calls`` from the released (checked) calls."""
    tool_calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for c in release.tool_calls:
        if c.kind != "tool":
            continue
        if c.index < valid:
            tool_calls.append(
                {
                    "name": c.name or "",
                    "args": json.loads(c.arguments),
                    "id": c.id,
                    "type": "tool_call",
                }
            )
        else:
            invalid.append(
                {
                    "name": c.name,
                    "args": c.arguments,
                    "id": c.id,
                    "error": None,
                    "type": "invalid_tool_call",
                }
            )
    return {"tool_calls": tool_calls, "invalid_tool_calls": invalid}


def _kwargs_of(release: Release, message: BaseMessage) -> dict[str, Any]:
    """``additional_kwargs`` with the provider's raw copies (reasoning, OpenAI-format tool calls,
    legacy function call) replaced by what the engine released: a raw copy must not carry what
    the checked fields no longer do."""
    kwargs = dict(message.additional_kwargs)
    if "reasoning_content" in kwargs:
        if release.reasoning:
            kwargs["reasoning_content"] = release.reasoning
        else:
            del kwargs["reasoning_content"]
    if "tool_calls" in kwargs:
        tools = [c for c in release.tool_calls if c.kind == "tool"]
        kwargs["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in tools
        ]
        if not tools:
            del kwargs["tool_calls"]
    if "function_call" in kwargs:
        legacy = [c for c in release.tool_calls if c.kind == "function"]
        if legacy:
            kwargs["function_call"] = {"name": legacy[0].name, "arguments": legacy[0].arguments}
        else:
            del kwargs["function_call"]
    return kwargs


def chunk_of(result: ChatResult) -> ChatGenerationChunk:
    """A whole (checked) reply as the one chunk of a stream."""
    message = cast(AIMessage, result.generations[0].message)
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            additional_kwargs=message.additional_kwargs,
            response_metadata=message.response_metadata,
            tool_call_chunks=[
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c.get("id"), "index": i}
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            id=message.id,
        )
    )
