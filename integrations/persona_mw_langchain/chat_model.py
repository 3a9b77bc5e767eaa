"""PersonaChatModel: any LangChain chat model, personalised and bounded. The full enforcement.

It is a ``BaseChatModel`` itself, so it drops in wherever the inner model went (chains, agents,
``bind_tools``, ``with_structured_output``, ``stream``/``astream``, batch). Per call it:

1. resolves the end user (``configurable["persona_user"]`` > ``metadata["persona_user"]`` >
   ``default_user``), loads the profile and runs the middleware's input stages on the messages
   (converted once to OpenAI dicts): bounds check, dependence actions, personalisation;
2. a blocked input is answered without the model: an ``AIMessage`` with the rule's message and
   ``response_metadata["finish_reason"] == "content_filter"``;
3. otherwise calls the inner model's ``_agenerate`` / ``_generate`` / ``_astream`` / ``_stream``
   with the personalised messages and *no* callback manager, so no unfiltered token reaches a
   callback (LangGraph's ``stream_mode="messages"`` included): callbacks see this model's
   filtered chunks only;
4. runs every generation of the reply through the shared enforcement engine
   (:meth:`persona_mw.Middleware.enforcer`): content, tool-call arguments (redactions keep them
   valid JSON), ``reasoning_content`` and logprobs; streamed replies go through the same engine
   with its hold-back, so a blocked phrase is never yielded. With tools or a
   ``response_format`` bound, notices go to ``response_metadata["persona_notices"]`` instead of
   the text;
5. runs the finish stages (usage recording) and logs one ``request.completed`` event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Self, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from pydantic import ConfigDict

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

from ._calls import begin, finish, ms_since, resolve_user, run_input_stages
from ._portal import run_sync
from .messages import USER_KEY, Conversation, reasoning_blocks, reasoning_of, tool_pieces

__all__ = ["PersonaChatModel"]

_FINISH = "finish_reason"


class PersonaChatModel(BaseChatModel):
    """Wraps ``inner`` (any ``BaseChatModel``) with ``middleware``'s stages.

    >>> chat = PersonaChatModel(inner=ChatOpenAI(model="gpt-4o-mini"), middleware=mw)
    >>> chat.invoke("hi", config={"configurable": {"persona_user": "ada"}})

    ``default_user`` answers calls that name no user (e.g. a single-user app); without it such a
    call raises :class:`persona_mw.ConfigError` saying how to pass one.

    The wrapper borrows ``middleware``; :meth:`close` / :meth:`aclose` (and ``with``) close it
    when the app is done, flushing the recorded usage (see :meth:`close`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    middleware: Middleware
    default_user: str | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return f"persona-mw/{self.inner._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": self.inner._llm_type, **self.inner._identifying_params}

    @property
    def model_label(self) -> str:
        """The inner model's name, as logged and recorded (``ctx.model``)."""
        for attr in ("model_name", "model"):
            value = getattr(self.inner, attr, None)
            if isinstance(value, str) and value:
                return value
        return self.inner._llm_type

    # -- shutting down ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the middleware after sync calls (``invoke``, ``stream``, ``batch``): write the
        buffered usage and close the stores.

        Sync calls run the middleware on this package's private event loop, where its usage
        writer and a Redis store's connections now live, so this closes it there;
        ``asyncio.run(mw.aclose())`` would close it from a new loop, which a Redis store
        cannot do. Blocks until done; in async code whose loop made async calls with the
        middleware use :meth:`aclose` (a blocking close would wait for the loop it blocks).

        The middleware is the app's, not the wrapper's: this closes it for every wrapper and
        handler sharing it, so call it once, when the app is done with all of them.
        """
        run_sync(self.middleware.aclose())

    async def aclose(self) -> None:
        """Close the middleware after async calls (``ainvoke``, ``astream``), in the running
        loop, where they ran: the same as ``await middleware.aclose()``. Usage still buffered
        by sync calls is written too. Closes the shared middleware, as :meth:`close` does."""
        await self.middleware.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with PersonaChatModel(...) as chat:`` closes the middleware at the end, as
        :meth:`close` does (for a sync app)."""
        self.close()

    # -- the user id from the run config ----------------------------------------------------

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **_with_user(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **_with_user(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, stop=stop, **_with_user(config, kwargs))

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, stop=stop, **_with_user(config, kwargs))

    # -- tools and structured output --------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The inner model formats the tools; the binding stays on this wrapper, so the call
        still goes through the stages. (``with_structured_output`` uses this, via tools.)"""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.inner.bind_tools(tools, **kwargs)
        if not isinstance(bound, RunnableBinding) or bound.bound is not self.inner:
            raise NotImplementedError(
                f"{type(self.inner).__name__}.bind_tools returned {type(bound).__name__}, not a "
                "binding of the model itself, so PersonaChatModel cannot keep the call inside "
                "persona_mw; bind the tools on the inner model before wrapping it instead"
            )
        rebound = self.bind(**bound.kwargs)
        return rebound.with_config(bound.config) if bound.config else rebound

    # -- calls ------------------------------------------------------------------------------
    # The four LangChain entry points differ only in how they call the inner model (sync or
    # async, whole or streamed); everything around that call is one :class:`_Call`.

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = run_sync(self._prepare(messages, False, run_manager, kwargs))
        try:
            if call.answered:
                return call.synthetic()
            started = time.perf_counter()
            result = self.inner._generate(call.prompt, stop=stop, run_manager=None, **kwargs)
            run_sync(call.enforcer.settle())
            return call.result(result, started)
        except BaseException as exc:
            mark_failed(call.ctx, exc)
            raise
        finally:
            run_sync(call.close())

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = await self._prepare(messages, False, run_manager, kwargs)
        try:
            if call.answered:
                return call.synthetic()
            started = time.perf_counter()
            result = await self.inner._agenerate(call.prompt, stop=stop, run_manager=None, **kwargs)
            await call.enforcer.settle()
            return call.result(result, started)
        except BaseException as exc:
            mark_failed(call.ctx, exc)
            raise
        finally:
            await call.close()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = run_sync(self._prepare(messages, True, run_manager, kwargs))
        try:
            if call.answered:
                yield _chunk_of(call.synthetic())
                return
            started = time.perf_counter()
            if not _streams(self.inner, async_api=False):
                result = self.inner._generate(call.prompt, stop=stop, run_manager=None, **kwargs)
                run_sync(call.enforcer.settle())
                yield _chunk_of(call.result(result, started))
                return
            upstream = self.inner._stream(call.prompt, stop=stop, run_manager=None, **kwargs)
            try:
                for piece in upstream:
                    if call.ctx.pending:  # nothing is released before the input checks' verdict
                        run_sync(call.enforcer.settle())
                    yield from call.feed(piece, started)
                    if call.enforcer.done and call.enforcer.any_blocked:
                        return
                run_sync(call.enforcer.settle())
                yield from call.end(started)
            finally:
                close = getattr(upstream, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            mark_failed(call.ctx, exc)
            raise
        finally:
            run_sync(call.close())

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = await self._prepare(messages, True, run_manager, kwargs)
        try:
            if call.answered:
                yield _chunk_of(call.synthetic())
                return
            started = time.perf_counter()
            if not _streams(self.inner, async_api=True):
                result = await self.inner._agenerate(
                    call.prompt, stop=stop, run_manager=None, **kwargs
                )
                await call.enforcer.settle()
                yield _chunk_of(call.result(result, started))
                return
            upstream = self.inner._astream(call.prompt, stop=stop, run_manager=None, **kwargs)
            try:
                async for piece in upstream:
                    if call.ctx.pending:  # nothing is released before the input checks' verdict
                        await call.enforcer.settle()
                    for out in call.feed(piece, started):
                        yield out
                    if call.enforcer.done and call.enforcer.any_blocked:
                        return
                await call.enforcer.settle()
                for out in call.end(started):
                    yield out
            finally:
                aclose = getattr(upstream, "aclose", None)
                if aclose is not None:
                    await aclose()
        except BaseException as exc:
            mark_failed(call.ctx, exc)
            raise
        finally:
            await call.close()

    async def _prepare(
        self,
        messages: list[BaseMessage],
        stream: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> _Call:
        """Resolve the user, load the profile, run the input stages. ``kwargs`` loses the user
        key here, so it never reaches the inner model; its ``tools`` / ``response_format``
        decide whether notices go out of band."""
        user = resolve_user(
            kwargs.pop(USER_KEY, None),
            run_manager.metadata if run_manager is not None else None,
            self.default_user,
        )
        conversation = Conversation(messages)
        ctx = await begin(
            self.middleware,
            user=user,
            model=self.model_label,
            messages=conversation.wire,
            stream=stream,
            request_id=str(run_manager.run_id) if run_manager is not None else None,
            request=kwargs,
        )
        try:
            await run_input_stages(self.middleware, ctx)
        except BaseException as exc:
            mark_failed(ctx, exc)
            await finish(self.middleware, ctx)
            raise
        return _Call(self.middleware, ctx, conversation)


def _with_user(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The user named in the run config travels to ``_generate`` / ``_stream`` as a kwarg:
    LangChain hands a chat model's ``_stream`` neither ``configurable`` nor the metadata."""
    if USER_KEY in kwargs:
        return kwargs
    config = ensure_config(config)
    user = (config.get("configurable") or {}).get(USER_KEY)
    if user is None:
        user = (config.get("metadata") or {}).get(USER_KEY)
    return kwargs if user is None else {**kwargs, USER_KEY: user}


def _streams(model: BaseChatModel, *, async_api: bool) -> bool:
    cls = type(model)
    if cls._stream is not BaseChatModel._stream:
        return True
    return async_api and cls._astream is not BaseChatModel._astream


# -- one call: LangChain's types on the engine --------------------------------------------------


class _Call:
    """One call's output side: LangChain messages and chunks converted to the engine's
    :class:`~persona_mw.enforce.Piece` and back from its :class:`~persona_mw.enforce.Release`.
    Every verdict is the engine's; this only converts, and keeps LangChain's rule that exactly
    one chunk of a stream carries the finish reason (it concatenates string metadata)."""

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

    def result(self, result: ChatResult, started: float) -> ChatResult:
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
            release = self.enforcer.whole(
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

    def feed(self, piece: ChatGenerationChunk, started: float) -> list[ChatGenerationChunk]:
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
        release = self.enforcer.feed(
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

    def end(self, started: float) -> list[ChatGenerationChunk]:
        """The upstream ended without a finish reason: what the filters held back (and, for a
        stream that said nothing, the notices)."""
        self.ctx.timings_ms["model"] = ms_since(started)
        if not self.enforcer.choices_seen:
            return [self._chunk(self.enforcer.feed(0, Piece(finish_reason="")), {}, {})]
        return [
            self._chunk(release, {}, {}) for release in self.enforcer.end() if not release.empty
        ]

    async def close(self) -> None:
        """The reply's text, finish reason and tokens onto the context, then the finish stages
        and the request event."""
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


def _chunk_of(result: ChatResult) -> ChatGenerationChunk:
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
