"""PersonaGuardrail: persona_mw inside an existing LiteLLM proxy (``litellm --config ...``).

LiteLLM calls the hooks of one guardrail object for every request in flight, so this class
keeps only long-lived parts (the :class:`persona_mw.Middleware` with its store and stages).
Each request's :class:`persona_mw.CallContext` is made in the pre-call hook and carried to the
later hooks in that request's own metadata dict (:mod:`persona_mw_litellm.edge`).

Hook by hook:

- ``async_pre_call_hook``: load the profile, run the input stages (bounds, dependence actions,
  personalisation), put the rewritten prompt back into ``data["messages"]``. A blocked input is
  answered without the model through LiteLLM's own ``mock_response``, so the client gets a normal
  reply (``finish_reason="content_filter"``) instead of an HTTP error: policy stays out of the
  transport.
- ``async_post_call_success_hook`` (non-streamed): the output stages over the reply, notices
  added, then usage recording (the finish stages) and one ``request.completed`` log event.
- ``async_post_call_streaming_iterator_hook``: the same output stages through a hold-back
  :class:`persona_mw.FilterChain`; a block ends the stream with ``finish_reason="content_filter"``
  and closes the upstream; usage is recorded when the stream ends, however it ends.
- ``async_post_call_failure_hook``: a failed call is recorded with outcome ``error``.

Configure it in the proxy's ``config.yaml``::

    guardrails:
      - guardrail_name: persona-mw
        litellm_params:
          guardrail: persona_mw_litellm.PersonaGuardrail
          mode: [pre_call, post_call]
          default_on: true
          persona_config: /etc/persona/persona.yaml   # or env PERSONA_MW_CONFIG
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from litellm import ModelResponse, ModelResponseStream
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.utils import Delta, StreamingChoices, Usage

from persona_mw import (
    CallContext,
    Config,
    ConfigError,
    FilterChain,
    Middleware,
    build_middleware,
    configure_logging,
    load_config,
)

from .edge import (
    CallHandle,
    attach_call,
    block_text,
    call_of,
    is_chat_call,
    notices_text,
    resolve_user,
    with_notices,
)

__all__ = ["CONFIG_ENV", "PersonaGuardrail"]

#: Where the plugin finds the persona_mw config when ``persona_config`` is not given.
CONFIG_ENV = "PERSONA_MW_CONFIG"
SURFACE = "litellm-proxy"


LogFormat = Literal["json", "console", "none"]
MiddlewareFactory = Callable[[Config], Middleware]


class PersonaGuardrail(CustomGuardrail):
    """A LiteLLM ``CustomGuardrail`` that runs persona_mw's stages around each chat completion.

    Keyword arguments come from the guardrail's ``litellm_params`` in the proxy config:

    - ``persona_config``: path of a persona_mw config file (default: ``$PERSONA_MW_CONFIG``;
      neither: the embedded defaults, in-memory profiles);
    - ``persona_factory``: ``"module:function"`` taking the :class:`persona_mw.Config` and
      returning a :class:`persona_mw.Middleware` (default :func:`persona_mw.build_middleware`),
      for deployments that wire their own stages;
    - ``persona_log``: ``json`` (default) or ``console`` renders persona_mw's events on stderr;
      ``none`` leaves structlog as the host process configured it.

    Everything else (``guardrail_name``, ``event_hook``/``mode``, ``default_on``, ...) is
    LiteLLM's and passed on to it.
    """

    def __init__(
        self,
        *,
        persona_config: str | None = None,
        persona_factory: str | None = None,
        persona_log: LogFormat = "json",
        middleware: Middleware | None = None,
        **litellm_kwargs: Any,
    ) -> None:
        super().__init__(**litellm_kwargs)
        if persona_log not in ("json", "console", "none"):
            raise ConfigError(
                f"persona_log must be 'json', 'console' or 'none', not {persona_log!r}",
                source="litellm guardrail params",
                field="persona_log",
            )
        if persona_log != "none":
            configure_logging(json=persona_log == "json", stream=sys.stderr)
        if middleware is None:
            path = persona_config or os.environ.get(CONFIG_ENV) or None
            config = load_config(path)
            middleware = _factory(persona_factory)(config)
        self.middleware = middleware

    # -- pre-call: profile, input stages, the prompt the model will see -------------------------

    async def async_pre_call_hook(
        self,
        user_api_key_dict: Any,
        cache: Any,
        data: dict[str, Any],
        call_type: Any,
    ) -> dict[str, Any] | None:
        if not is_chat_call(call_type) or not isinstance(data.get("messages"), list):
            return None
        mw = self.middleware
        started = time.perf_counter()
        user = resolve_user(
            data,
            getattr(user_api_key_dict, "user_id", None),
            getattr(user_api_key_dict, "end_user_id", None),
        )
        profile, source = await mw.load_profile(user)
        messages: list[dict[str, Any]] = list(data["messages"])
        ctx = CallContext(
            request_id=str(data.get("litellm_call_id") or uuid.uuid4()),
            user_id=user,
            user_hash=mw.hash_user(user),
            model=str(data.get("model") or ""),
            messages=messages,
            prompt_messages=list(messages),
            stream=data.get("stream") is True,
            llm_kwargs={},  # the proxy calls the model with its own parameters
            profile=profile,
            profile_source=source,
            started_at=datetime.now(UTC),
            surface=SURFACE,
            _t0=started,
        )
        ctx.timings_ms["profile"] = _ms_since(started)
        for stage in mw.input_stages:
            t = time.perf_counter()
            await stage(ctx)
            ctx.timings_ms[stage.name] = _ms_since(t)
            if ctx.reply is not None:
                ctx.outcome = "blocked"
                break
        attach_call(data, ctx)
        if ctx.reply is not None:
            # Answered without the model: LiteLLM's mock_response returns this text as a normal
            # (or streamed) reply; the post-call hooks set its finish_reason.
            data["mock_response"] = with_notices(ctx, ctx.reply)
        else:
            data["messages"] = ctx.prompt_messages
        return data

    # -- post-call, not streamed ----------------------------------------------------------------

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        handle = call_of(data)
        if handle is None or handle.finished or not isinstance(response, ModelResponse):
            return None
        ctx = handle.ctx
        try:
            _enforce_reply(self.middleware, ctx, response)
        except BaseException as exc:
            _mark_failed(ctx, exc)
            raise
        finally:
            await self._finish(handle)
        return response

    # -- post-call, streamed --------------------------------------------------------------------

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[ModelResponseStream, None]:
        handle = call_of(request_data)
        if handle is None or handle.finished:
            async for item in response:
                yield item
            return
        try:
            async for chunk in _enforce_stream(self.middleware, handle.ctx, response):
                yield chunk
        except BaseException as exc:
            _mark_failed(handle.ctx, exc)
            raise
        finally:
            aclose = getattr(response, "aclose", None)
            if aclose is not None:
                await aclose()  # a blocked or abandoned stream stops the upstream call
            await self._finish(handle)

    # -- failures -------------------------------------------------------------------------------

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        handle = call_of(request_data)
        if handle is not None and not handle.finished:
            _mark_failed(handle.ctx, original_exception)
            await self._finish(handle)
        return None

    async def _finish(self, handle: CallHandle) -> None:
        """Finish stages (usage recording), then the request event; once per call, never
        raising: a failing recorder must not turn a good reply into an error."""
        if handle.finished:
            return
        handle.finished = True
        await self.middleware.finish(handle.ctx)


# -- the reply, checked -------------------------------------------------------------------------


def _enforce_reply(mw: Middleware, ctx: CallContext, response: ModelResponse) -> None:
    """Output stages over a whole reply; a block replaces it with the rule's message."""
    started = time.perf_counter()
    choice = response.choices[0]
    message = choice.message
    if ctx.reply is not None:  # our own answer to a blocked input: trusted, not re-checked
        # No model ran: report no tokens (LiteLLM's mock_response invents some).
        response.usage = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        choice.finish_reason = ctx.reply_finish_reason
        ctx.output_text = message.content or ""
        ctx.finish_reason = ctx.reply_finish_reason
        return
    text = message.content if isinstance(message.content, str) else ""
    chain = mw.open_filters(ctx)
    released = chain.feed(text) + chain.finish() if text else ""
    if chain.stopped:
        released = block_text(ctx.decisions)
        choice.finish_reason = "content_filter"
        ctx.outcome = "filtered"
    if text or ctx.notices:
        message.content = with_notices(ctx, released)
    ctx.output_text = message.content or ""
    ctx.finish_reason = choice.finish_reason
    _record_usage(ctx, getattr(response, "usage", None))
    ctx.timings_ms["output"] = _ms_since(started)


async def _enforce_stream(
    mw: Middleware, ctx: CallContext, upstream: AsyncIterator[ModelResponseStream]
) -> AsyncIterator[ModelResponseStream]:
    """Output stages over a stream, with hold-back: nothing a filter holds or blocks is yielded."""
    blocked_input = ctx.reply is not None
    chain = FilterChain([]) if blocked_input else mw.open_filters(ctx)
    header: dict[str, Any] = {}
    out: list[str] = []
    filter_ms = 0.0

    def chunk(text: str | None, finish_reason: str | None = None) -> ModelResponseStream:
        return ModelResponseStream(
            **header,
            choices=[
                StreamingChoices(
                    index=0,
                    delta=Delta(content=text, role="assistant"),
                    finish_reason=finish_reason,
                )
            ],
        )

    def stop(released: str) -> ModelResponseStream:
        ctx.outcome = "filtered"
        ctx.finish_reason = "content_filter"
        text = released + ("\n\n" if (released or any(out)) else "") + block_text(ctx.decisions)
        out.append(text)
        return chunk(text, "content_filter")

    try:
        async for piece in upstream:
            if not header:
                header = {"id": piece.id, "model": piece.model, "created": piece.created}
                before = "" if blocked_input else notices_text(ctx, "before")
                if before:
                    out.append(before + "\n\n")
                    yield chunk(before + "\n\n")
            if not blocked_input:  # no model ran for a blocked input: no tokens to count
                _record_usage(ctx, getattr(piece, "usage", None))
            if not piece.choices:
                yield piece  # the usage chunk
                continue
            choice = piece.choices[0]
            delta = choice.delta
            t = time.perf_counter()
            released = chain.feed(delta.content) if delta.content else ""
            filter_ms += _ms_since(t)
            if chain.stopped:
                yield stop(released)
                return
            if choice.finish_reason is not None:
                t = time.perf_counter()
                released += chain.finish()
                filter_ms += _ms_since(t)
                if chain.stopped:
                    yield stop(released)
                    return
                if blocked_input:
                    choice.finish_reason = ctx.reply_finish_reason
                else:
                    after = notices_text(ctx, "after")
                    if after:
                        released += ("\n\n" if (released or any(out)) else "") + after
                ctx.finish_reason = choice.finish_reason
                out.append(released)
                delta.content = released or None
                yield piece
                continue
            if released or delta.tool_calls or delta.function_call or (delta.role and not out):
                out.append(released)
                delta.content = released or None
                yield piece
    finally:
        ctx.output_text = "".join(out)
        ctx.timings_ms["output"] = filter_ms
        if not ctx.completion_tokens and not blocked_input:
            ctx.completion_tokens = (len(ctx.output_text) + 3) // 4


# -- helpers ------------------------------------------------------------------------------------


def _factory(spec: str | None) -> MiddlewareFactory:
    if not spec:
        return build_middleware
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"persona_factory must look like 'package.module:function', not {spec!r}",
            source="litellm guardrail params",
            field="persona_factory",
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot load persona_factory {spec!r}: {exc}; check the module is importable by "
            "the proxy (PYTHONPATH) and the function name",
            source="litellm guardrail params",
            field="persona_factory",
        ) from None
    if not callable(factory):
        raise ConfigError(f"persona_factory {spec!r} is not callable", field="persona_factory")
    return factory  # type: ignore[no-any-return]


def _record_usage(ctx: CallContext, usage: Any) -> None:
    if usage is not None:
        ctx.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        ctx.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)


def _mark_failed(ctx: CallContext, exc: BaseException) -> None:
    if ctx.outcome in ("filtered", "blocked") and not isinstance(exc, Exception):
        return
    if isinstance(exc, Exception):
        ctx.outcome = "error"
        ctx.error = type(exc).__name__
    else:  # CancelledError, GeneratorExit: the client went away
        ctx.outcome = "cancelled"


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
