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
4. runs the reply through the output filters (a :class:`persona_mw.FilterChain`), streamed
   replies through the same filters with their hold-back, so a blocked phrase is never yielded;
5. runs the finish stages (usage recording) and logs one ``request.completed`` event.

Tool calls and structured output pass through unfiltered (only text content is checked):
a filter sees prose, not JSON arguments.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Self, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from pydantic import ConfigDict

from persona_mw import CallContext, FilterChain, Middleware, blocked_ending

from ._calls import (
    begin,
    block_text,
    finish,
    mark_failed,
    ms_since,
    notices_text,
    open_filters,
    resolve_user,
    run_input_stages,
    with_notices,
)
from ._portal import run_sync
from .messages import USER_KEY, Conversation

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

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ctx, conversation = run_sync(self._prepare(messages, False, run_manager, kwargs))
        try:
            if ctx.reply is not None:
                return _reply_result(ctx)
            started = time.perf_counter()
            result = self.inner._generate(
                conversation.to_langchain(ctx.prompt_messages),
                stop=stop,
                run_manager=None,
                **kwargs,
            )
            ctx.timings_ms["model"] = ms_since(started)
            return _check_result(self.middleware, ctx, result)
        except BaseException as exc:
            mark_failed(ctx, exc)
            raise
        finally:
            run_sync(finish(self.middleware, ctx))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ctx, conversation = await self._prepare(messages, False, run_manager, kwargs)
        try:
            if ctx.reply is not None:
                return _reply_result(ctx)
            started = time.perf_counter()
            result = await self.inner._agenerate(
                conversation.to_langchain(ctx.prompt_messages),
                stop=stop,
                run_manager=None,
                **kwargs,
            )
            ctx.timings_ms["model"] = ms_since(started)
            return _check_result(self.middleware, ctx, result)
        except BaseException as exc:
            mark_failed(ctx, exc)
            raise
        finally:
            await finish(self.middleware, ctx)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        ctx, conversation = run_sync(self._prepare(messages, True, run_manager, kwargs))
        try:
            if ctx.reply is not None:
                yield _reply_chunk(ctx)
                return
            prompt = conversation.to_langchain(ctx.prompt_messages)
            if not _streams(self.inner, async_api=False):
                result = self.inner._generate(prompt, stop=stop, run_manager=None, **kwargs)
                yield _as_chunk(_check_result(self.middleware, ctx, result))
                return
            held = _HeldStream(self.middleware, ctx)
            upstream = self.inner._stream(prompt, stop=stop, run_manager=None, **kwargs)
            try:
                for piece in upstream:
                    yield from held.feed(piece)
                    if held.done:
                        return
                yield from held.end()
            finally:
                close = getattr(upstream, "close", None)
                if close is not None:
                    close()
                held.close()
        except BaseException as exc:
            mark_failed(ctx, exc)
            raise
        finally:
            run_sync(finish(self.middleware, ctx))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        ctx, conversation = await self._prepare(messages, True, run_manager, kwargs)
        try:
            if ctx.reply is not None:
                yield _reply_chunk(ctx)
                return
            prompt = conversation.to_langchain(ctx.prompt_messages)
            if not _streams(self.inner, async_api=True):
                result = await self.inner._agenerate(prompt, stop=stop, run_manager=None, **kwargs)
                yield _as_chunk(_check_result(self.middleware, ctx, result))
                return
            held = _HeldStream(self.middleware, ctx)
            upstream = self.inner._astream(prompt, stop=stop, run_manager=None, **kwargs)
            try:
                async for piece in upstream:
                    for out in held.feed(piece):
                        yield out
                    if held.done:
                        return
                for out in held.end():
                    yield out
            finally:
                aclose = getattr(upstream, "aclose", None)
                if aclose is not None:
                    await aclose()
                held.close()
        except BaseException as exc:
            mark_failed(ctx, exc)
            raise
        finally:
            await finish(self.middleware, ctx)

    async def _prepare(
        self,
        messages: list[BaseMessage],
        stream: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> tuple[CallContext, Conversation]:
        """Resolve the user, load the profile, run the input stages. ``kwargs`` loses the user
        key here, so it never reaches the inner model."""
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
        )
        try:
            await run_input_stages(self.middleware, ctx)
        except BaseException as exc:
            mark_failed(ctx, exc)
            await finish(self.middleware, ctx)
            raise
        return ctx, conversation


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


# -- non-streamed replies ---------------------------------------------------------------------


def _reply_result(ctx: CallContext) -> ChatResult:
    """An input stage answered (a block): the reply without the model."""
    assert ctx.reply is not None
    text = with_notices(ctx, ctx.reply)
    ctx.output_text = text
    ctx.finish_reason = ctx.reply_finish_reason
    message = AIMessage(content=text, response_metadata={_FINISH: ctx.reply_finish_reason})
    return ChatResult(generations=[ChatGeneration(message=message)])


def _reply_chunk(ctx: CallContext) -> ChatGenerationChunk:
    generation = _reply_result(ctx).generations[0]
    return _chunk_of(cast(AIMessage, generation.message))


def _check_result(mw: Middleware, ctx: CallContext, result: ChatResult) -> ChatResult:
    """The output filters over each generation's text; a block replaces the whole reply."""
    started = time.perf_counter()
    generations: list[ChatGeneration] = []
    for generation in result.generations:
        message = generation.message
        text = message.text
        chain = open_filters(mw, ctx)
        released = chain.feed(text) + chain.finish() if text else ""
        info = dict(generation.generation_info or {})
        metadata = dict(message.response_metadata)
        finish_reason = metadata.get(_FINISH) or info.get(_FINISH)
        update: dict[str, Any] = {}
        if chain.stopped:
            released, finish_reason = block_text(ctx), "content_filter"
            ctx.outcome = "filtered"
            if isinstance(message, AIMessage):
                update.update(tool_calls=[], invalid_tool_calls=[])
        if chain.stopped or released != text or ctx.notices:
            update["content"] = with_notices(ctx, released)
        if finish_reason is not None:
            metadata[_FINISH] = finish_reason
            info.pop(_FINISH, None)
        update["response_metadata"] = metadata
        message = message.model_copy(update=update)
        generations.append(ChatGeneration(message=message, generation_info=info or None))
        usage = getattr(message, "usage_metadata", None)
        if usage:
            ctx.prompt_tokens += int(usage.get("input_tokens") or 0)
            ctx.completion_tokens += int(usage.get("output_tokens") or 0)
        if len(generations) == 1:
            ctx.output_text = message.text
            ctx.finish_reason = finish_reason
    if not ctx.prompt_tokens and not ctx.completion_tokens:
        usage = (result.llm_output or {}).get("token_usage") or {}
        ctx.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        ctx.completion_tokens = int(usage.get("completion_tokens") or 0)
    ctx.timings_ms["output"] = ms_since(started)
    return ChatResult(generations=generations, llm_output=result.llm_output)


def _chunk_of(message: AIMessage) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            response_metadata=message.response_metadata,
            tool_call_chunks=[
                {"name": c["name"], "args": _json(c["args"]), "id": c.get("id"), "index": i}
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            id=message.id,
        )
    )


def _as_chunk(result: ChatResult) -> ChatGenerationChunk:
    return _chunk_of(cast(AIMessage, result.generations[0].message))


def _json(value: Any) -> str:
    return json.dumps(value)


# -- streamed replies -------------------------------------------------------------------------


class _HeldStream:
    """One streamed call's output side: the filter chain with its hold-back, the usage, and
    the single place the finish reason is emitted (LangChain concatenates string metadata when
    it merges chunks, so exactly one chunk may carry ``finish_reason``)."""

    def __init__(self, mw: Middleware, ctx: CallContext) -> None:
        self.ctx = ctx
        self.chain: FilterChain = open_filters(mw, ctx)
        self.started = time.perf_counter()
        self.filter_ms = 0.0
        self.out: list[str] = []
        self.finish_reason: str | None = None
        self.first = True
        self.done = False
        #: The blank line owed between the notices before the reply and its first text: sent
        #: with that text, so the streamed reply reads exactly like the whole one.
        self.gap = ""

    def feed(self, piece: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        ctx = self.ctx
        ready = self._start()
        message = piece.message
        usage = getattr(message, "usage_metadata", None)
        if usage:
            ctx.prompt_tokens += int(usage.get("input_tokens") or 0)
            ctx.completion_tokens += int(usage.get("output_tokens") or 0)
        text = message.text
        t = time.perf_counter()
        released = self._spaced(self.chain.feed(text) if text else "")
        self.filter_ms += ms_since(t)
        if self.chain.stopped:
            ready.append(self._blocked(released))
            return ready
        info = dict(piece.generation_info or {})
        metadata = dict(message.response_metadata)
        reason = metadata.pop(_FINISH, None) or info.pop(_FINISH, None)
        if reason:
            self.finish_reason = str(reason)
        keep = released or getattr(message, "tool_call_chunks", None) or usage or metadata or info
        if keep:
            self.out.append(released)
            update: dict[str, Any] = {"response_metadata": metadata, "chunk_position": None}
            if released != text:
                update["content"] = released
            ready.append(
                ChatGenerationChunk(
                    message=message.model_copy(update=update), generation_info=info or None
                )
            )
        return ready

    def end(self) -> list[ChatGenerationChunk]:
        """The upstream ended: release the hold-back, the notices after, the finish reason."""
        ready = self._start()  # an empty stream still shows the notices before
        t = time.perf_counter()
        released = self._spaced(self.chain.finish())
        self.filter_ms += ms_since(t)
        if self.chain.stopped:
            return [*ready, self._blocked(released)]
        after = notices_text(self.ctx, "after")
        if after:
            released += ("\n\n" if released or any(self.out) else "") + after
        self.ctx.finish_reason = self.finish_reason
        self.out.append(released)
        metadata = {_FINISH: self.finish_reason} if self.finish_reason else {}
        if released or metadata:
            ready.append(self._text_chunk(released, metadata))
        return ready

    def _start(self) -> list[ChatGenerationChunk]:
        """Once, before anything else: the time to the first token and the notices before."""
        if not self.first:
            return []
        self.first = False
        self.ctx.timings_ms["first_token"] = ms_since(self.started)
        before = notices_text(self.ctx, "before")
        if not before:
            return []
        self.out.append(before)
        self.gap = "\n\n"
        return [self._text_chunk(before)]

    def _spaced(self, released: str) -> str:
        if released and self.gap:
            released, self.gap = self.gap + released, ""
        return released

    def close(self) -> None:
        ctx = self.ctx
        ctx.output_text = "".join(self.out)
        ctx.timings_ms["model"] = ms_since(self.started)
        ctx.timings_ms["output"] = self.filter_ms
        if not ctx.completion_tokens:
            ctx.completion_tokens = (len(ctx.output_text) + 3) // 4

    def _blocked(self, released: str) -> ChatGenerationChunk:
        """The rule's message, then the notices after the reply (crisis resources must survive a
        blocked reply), as the whole reply reads."""
        self.done = True
        text = released + blocked_ending(self.ctx, "".join(self.out) + released)
        self.out.append(text)
        self.ctx.outcome = "filtered"
        self.ctx.finish_reason = "content_filter"
        return self._text_chunk(text, {_FINISH: "content_filter"})

    def _text_chunk(self, text: str, metadata: dict[str, Any] | None = None) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(content=text, response_metadata=metadata or {})
        )
