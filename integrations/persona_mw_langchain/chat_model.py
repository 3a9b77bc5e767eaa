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

Each of those exists once, async (:meth:`PersonaChatModel._agenerate`, ``_astream``); the sync
``_generate`` / ``_stream`` drive the same code on the integration's private loop
(:mod:`persona_mw_langchain._portal`), a stream chunk by chunk. Only the inner model is called
the sync way for a sync call (its ``_generate`` / ``_stream``, in a worker thread), so a sync
app keeps the model client it has today. The call's own steps live in :mod:`._reply`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from typing import Any, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from pydantic import ConfigDict

from persona_mw import Middleware

from ._calls import resolve_user
from ._portal import in_thread, iterate_in_thread, iterate_sync, run_sync
from ._reply import Call, chunk_of, start_call
from .messages import USER_KEY

__all__ = ["PersonaChatModel"]


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

    # LangChain hands ``_generate`` / ``_stream`` neither ``configurable`` nor the metadata, so
    # the entry points pass the user named in the run config on as a kwarg (``stop`` and the
    # rest travel in ``kwargs`` unchanged).

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return super().invoke(input, config, **_with_user(config, kwargs))

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        return await super().ainvoke(input, config, **_with_user(config, kwargs))

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, **_with_user(config, kwargs))

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, **_with_user(config, kwargs))

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
    # One implementation per behaviour, async: ``_whole`` (a reply) and ``_chunks`` (a
    # stream). The async entry points are them; the sync ones drive them on the private loop.

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._whole(
            messages, run_manager, _Request(self.inner, stop, kwargs, sync=False)
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return run_sync(
            self._whole(messages, run_manager, _Request(self.inner, stop, kwargs, sync=True))
        )

    def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        return self._chunks(messages, run_manager, _Request(self.inner, stop, kwargs, sync=False))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # a generator itself, so nothing starts before the first chunk is asked for
        request = _Request(self.inner, stop, kwargs, sync=True)
        yield from iterate_sync(self._chunks(messages, run_manager, request))

    async def _whole(
        self, messages: list[BaseMessage], run_manager: _RunManager, request: _Request
    ) -> ChatResult:
        async with await self._start(messages, run_manager, request, stream=False) as call:
            return call.synthetic() if call.answered else await request.whole(call)

    async def _chunks(
        self, messages: list[BaseMessage], run_manager: _RunManager, request: _Request
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        async with await self._start(messages, run_manager, request, stream=True) as call:
            if call.answered or not request.streams:
                yield chunk_of(call.synthetic() if call.answered else await request.whole(call))
                return
            started = time.perf_counter()
            upstream = request.stream(call.prompt)
            try:
                async for piece in upstream:
                    for out in await call.feed(piece, started):  # settles the input checks
                        yield out
                    if call.enforcer.done and call.enforcer.any_blocked:
                        return
                for out in await call.end(started):
                    yield out
            finally:
                aclose = getattr(upstream, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def _start(
        self,
        messages: list[BaseMessage],
        run_manager: _RunManager,
        request: _Request,
        *,
        stream: bool,
    ) -> Call:
        """Resolve the user, load the profile, run the input stages. The request's ``tools`` /
        ``response_format`` decide whether notices go out of band."""
        return await start_call(
            self.middleware,
            messages,
            user=resolve_user(
                request.user,
                run_manager.metadata if run_manager is not None else None,
                self.default_user,
            ),
            model=self.model_label,
            stream=stream,
            request_id=str(run_manager.run_id) if run_manager is not None else None,
            request=request.kwargs,
        )


def _with_user(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the user the run config names (``configurable``, then ``metadata``)."""
    if USER_KEY in kwargs:
        return kwargs
    config = ensure_config(config)
    user = (config.get("configurable") or {}).get(USER_KEY)
    if user is None:
        user = (config.get("metadata") or {}).get(USER_KEY)
    return kwargs if user is None else {**kwargs, USER_KEY: user}


_RunManager = CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None


class _Request:
    """One call as the wrapper got it, and how it reaches the inner model (with no callback
    manager). The user named by the run config leaves ``kwargs`` here, so it never reaches the
    inner model. An async call uses the model's async API. A sync call uses its sync API, in a
    worker thread (the call runs on the private loop): an async client's pooled connections
    belong to the loop that opened them, which is the app's own loop when the app also makes
    async calls."""

    def __init__(
        self, model: BaseChatModel, stop: list[str] | None, kwargs: dict[str, Any], *, sync: bool
    ) -> None:
        self.user = kwargs.pop(USER_KEY, None)
        self.model = model
        self.stop = stop
        self.kwargs = kwargs
        self.sync = sync

    @property
    def streams(self) -> bool:
        """The model streams itself (``_astream`` falls back to ``_stream`` in LangChain)."""
        cls = type(self.model)
        if cls._stream is not BaseChatModel._stream:
            return True
        return not self.sync and cls._astream is not BaseChatModel._astream

    async def whole(self, call: Call) -> ChatResult:
        """The model's whole reply, checked. The model-backed input checks, which ran beside
        the model call, are settled before anything is released."""
        started = time.perf_counter()
        if self.sync:
            result = await in_thread(
                partial(
                    self.model._generate,
                    call.prompt,
                    stop=self.stop,
                    run_manager=None,
                    **self.kwargs,
                )
            )
        else:
            result = await self.model._agenerate(
                call.prompt, stop=self.stop, run_manager=None, **self.kwargs
            )
        return await call.result(result, started)

    def stream(self, prompt: list[BaseMessage]) -> AsyncIterator[ChatGenerationChunk]:
        if self.sync:
            return iterate_in_thread(
                partial(self.model._stream, prompt, stop=self.stop, run_manager=None, **self.kwargs)
            )
        return self.model._astream(prompt, stop=self.stop, run_manager=None, **self.kwargs)
