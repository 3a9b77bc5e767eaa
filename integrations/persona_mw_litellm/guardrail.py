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
  transport. Input checks that run beside the model call (moderation, judge) wait for:
- ``log_pre_api_call``: LiteLLM's pre-API-call event, which its provider code logs right before
  it sends the model request (the proxy's other hooks and its router have run by then); the
  checks start then, so their CPU cannot delay that request. The post-call hooks start any that
  are still waiting (a reply that came without that event, e.g. from the proxy's cache).
- ``async_post_call_success_hook`` (non-streamed): the output stages over the reply, notices
  added (:meth:`persona_mw.Middleware.enforce_reply`), then usage recording (the finish stages)
  and one ``request.completed`` log event.
- ``async_post_call_streaming_iterator_hook``: the same output stages with hold-back over the
  proxy's stream (:meth:`persona_mw.Middleware.enforce_stream`, the loop ``Middleware.astream``
  runs too); a block ends the stream with ``finish_reason="content_filter"`` and closes the
  upstream; usage is recorded when the stream ends, however it ends.
- ``async_post_call_failure_hook``: a failed call is recorded with outcome ``error``.

Only chat completions are enforced. Any other call type that reaches the guardrail (the
Responses API, text completions, embeddings, images, audio, Anthropic messages, batches, ...)
is refused with :class:`RequestRefused` (HTTP 400 naming the route) before the model is called,
unless the deployer lists it in ``persona_unchecked_routes``.

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

import asyncio
import importlib
import os
import sys
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any, Literal

from litellm import ModelResponse, ModelResponseStream
from litellm.integrations.custom_guardrail import CustomGuardrail

from persona_mw import (
    Config,
    ConfigError,
    Middleware,
    PersonaError,
    build_middleware,
    load_config,
)
from persona_mw.compliance import PROVENANCE_FIELD
from persona_mw.enforce import NOTICES_FIELD, mark_failed, reply_text
from persona_mw.llm import sent_soon
from persona_mw.observability import get_logger, route_library_logs

from .edge import (
    ENFORCED_CALL_TYPES,
    CallHandle,
    attach_call,
    call_of,
    call_type_name,
    forget_user,
    request_path,
    resolve_user,
)

__all__ = ["CONFIG_ENV", "PersonaGuardrail", "RequestRefused"]

#: Where the plugin finds the persona_mw config when ``persona_config`` is not given.
CONFIG_ENV = "PERSONA_MW_CONFIG"
SURFACE = "litellm-proxy"


LogFormat = Literal["json", "console", "none"]
MiddlewareFactory = Callable[[Config], Middleware]

_log = get_logger("persona_mw.litellm")


class RequestRefused(PersonaError):
    """A request the plugin does not pass on to the model: a route it cannot hold to the
    bounds, or a chat request it cannot read. The proxy answers ``status_code`` with this
    message (LiteLLM maps an exception's ``status_code`` to the HTTP status)."""

    status_code = 400

    def __init__(self, message: str, *, route: str) -> None:
        self.route = route
        super().__init__(message)

    @classmethod
    def for_route(cls, route: str, path: str | None) -> RequestRefused:
        where = f"{path} (LiteLLM call type {route!r})" if path else f"LiteLLM call type {route!r}"
        return cls(
            f"persona_mw refuses {where}: it enforces its bounds on chat completions only "
            "(/v1/chat/completions), and a request it cannot check must not reach the model. "
            "Send the conversation to /v1/chat/completions, or, if this route carries no "
            f"end-user text, list {route!r} in the guardrail's persona_unchecked_routes",
            route=route,
        )


class PersonaGuardrail(CustomGuardrail):
    """A LiteLLM ``CustomGuardrail`` that runs persona_mw's stages around each chat completion.

    Keyword arguments come from the guardrail's ``litellm_params`` in the proxy config:

    - ``persona_config``: path of a persona_mw config file (default: ``$PERSONA_MW_CONFIG``;
      neither: the embedded defaults, in-memory profiles);
    - ``persona_factory``: ``"module:function"`` taking the :class:`persona_mw.Config` and
      returning a :class:`persona_mw.Middleware` (default :func:`persona_mw.build_middleware`),
      for deployments that wire their own stages;
    - ``persona_log``: ``json`` (default) or ``console`` renders persona_mw's own events on
      stderr; ``none`` lets them follow the host's structlog configuration. Either way the
      plugin never changes the host's logging (:func:`persona_mw.observability.route_library_logs`);
    - ``persona_unchecked_routes``: LiteLLM call types (e.g. ``aembedding``) the deployer lets
      through unchecked; every other call type but chat completions is refused.

    Everything else (``guardrail_name``, ``event_hook``/``mode``, ``default_on``, ...) is
    LiteLLM's and passed on to it.
    """

    def __init__(
        self,
        *,
        persona_config: str | None = None,
        persona_factory: str | None = None,
        persona_log: LogFormat = "json",
        persona_unchecked_routes: list[str] | None = None,
        middleware: Middleware | None = None,
        **litellm_kwargs: Any,
    ) -> None:
        super().__init__(**litellm_kwargs)
        self.unchecked_routes = _unchecked_routes(persona_unchecked_routes)
        if persona_log not in ("json", "console", "none"):
            raise ConfigError(
                f"persona_log must be 'json', 'console' or 'none', not {persona_log!r}",
                source="litellm guardrail params",
                field="persona_log",
            )
        if persona_log != "none":
            # persona_mw's own events only: the proxy's structlog set-up is the host's to make
            route_library_logs(json=persona_log == "json", stream=sys.stderr)
        if middleware is None:
            path = persona_config or os.environ.get(CONFIG_ENV) or None
            config = load_config(path)
            middleware = _factory(persona_factory)(config)
        self.middleware = middleware
        if self.unchecked_routes:
            _log.warning(
                "litellm.unchecked_routes",
                routes=sorted(self.unchecked_routes),
                hint="these LiteLLM call types reach the model with no persona_mw bounds",
            )

    # -- pre-call: profile, input stages, the prompt the model will see -------------------------

    async def async_pre_call_hook(
        self,
        user_api_key_dict: Any,
        cache: Any,
        data: dict[str, Any],
        call_type: Any,
    ) -> dict[str, Any] | None:
        route = call_type_name(call_type)
        if route not in ENFORCED_CALL_TYPES:
            if route in self.unchecked_routes:
                return None
            raise RequestRefused.for_route(route, request_path(data))
        mw = self.middleware
        user = resolve_user(
            data,
            getattr(user_api_key_dict, "user_id", None),
            getattr(user_api_key_dict, "end_user_id", None),
        )
        forget_user(data)
        messages = data.get("messages")
        try:
            ctx = await mw.begin(
                user,
                str(data.get("model") or ""),
                list(messages) if isinstance(messages, list) else [],  # [] is refused, named
                {},  # the proxy calls the model: no LiteLLM keywords travel with the call
                stream=data.get("stream") is True,
                surface=SURFACE,
                request=data,  # n, response_format, tools: choices and where notices go
                request_id=_call_id(data),
            )
        except ConfigError as exc:
            raise RequestRefused(str(exc), route=route) from None
        ctx.request_sent = asyncio.Event()  # set through log_pre_api_call
        try:
            await mw.run_input_stages(ctx)
        except BaseException as exc:
            mark_failed(ctx, exc)
            await mw.finish(ctx)
            raise
        handle = attach_call(data, ctx)
        if ctx.pending:
            handle.request_out = sent_soon(ctx.request_sent)
        if ctx.reply is not None:
            # Answered without the model: LiteLLM's mock_response returns this text as a normal
            # (or streamed) reply; the post-call hooks pass it on with the reply's finish_reason.
            data["mock_response"] = reply_text(ctx)
        else:
            data["messages"] = ctx.prompt_messages
        return data

    # -- the model request goes out -------------------------------------------------------------

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict[str, Any]) -> None:
        """LiteLLM's provider code logs this just before it sends the model request, for every
        LiteLLM call in the proxy (the classifiers' own too: they carry no handle). LiteLLM
        1.108 calls only this sync hook; ``async_log_pre_api_call`` never. It also logs it for
        a request the proxy turned away before any provider (``litellm_no_upstream_llm_call``),
        which starts nothing."""
        handle = call_of(kwargs)
        if (
            handle is not None
            and handle.request_out is not None
            and not kwargs.get("litellm_no_upstream_llm_call")
        ):
            handle.request_out()

    # -- post-call, not streamed ----------------------------------------------------------------

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        handle = call_of(data)
        if handle is None or handle.finished or not isinstance(response, ModelResponse):
            return None
        ctx = handle.ctx
        try:
            await self.middleware.enforce_reply(ctx, response)
        except BaseException as exc:
            mark_failed(ctx, exc)
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
            # enforce_stream closes the proxy's stream however it ends: a blocked or abandoned
            # reply stops the upstream call. Closing it here, before _finish, records its text.
            async with aclosing(self.middleware.enforce_stream(handle.ctx, response)) as chunks:
                async for chunk in chunks:
                    yield _keep_notices(chunk)
        except BaseException as exc:
            mark_failed(handle.ctx, exc)
            raise
        finally:
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
            mark_failed(handle.ctx, original_exception)
            await self._finish(handle)
        return None

    async def _finish(self, handle: CallHandle) -> None:
        """Finish stages (usage recording), then the request event; once per call, never
        raising: a failing recorder must not turn a good reply into an error."""
        if handle.finished:
            return
        handle.finished = True
        await self.middleware.finish(handle.ctx)


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


def _keep_notices(chunk: ModelResponseStream) -> ModelResponseStream:
    """A chunk carrying notices out of band (``persona_notices``) or the provenance marker
    (``persona_provenance``) must reach the client with them. The proxy's fast serializer for
    plain text chunks writes only the fields it knows and falls back to the full one when
    ``provider_specific_fields`` is set, so set it (empty)."""
    extra = any(getattr(chunk, f, None) is not None for f in (NOTICES_FIELD, PROVENANCE_FIELD))
    if extra and chunk.provider_specific_fields is None:
        chunk.provider_specific_fields = {}
    return chunk


def _unchecked_routes(routes: object) -> frozenset[str]:
    if routes is None:
        return frozenset()
    if not isinstance(routes, list) or not all(isinstance(r, str) and r for r in routes):
        raise ConfigError(
            "persona_unchecked_routes must be a list of LiteLLM call types, e.g. [aembedding]",
            source="litellm guardrail params",
            field="persona_unchecked_routes",
        )
    enforced = sorted(set(routes) & ENFORCED_CALL_TYPES)
    if enforced:
        raise ConfigError(
            f"{', '.join(enforced)} cannot be unchecked: chat completions always run the "
            "bounds (tier 1 is the law); remove them from persona_unchecked_routes",
            source="litellm guardrail params",
            field="persona_unchecked_routes",
        )
    return frozenset(routes)


def _call_id(data: Mapping[str, Any]) -> str | None:
    """The proxy's own id for the call, so our log events and its own share one."""
    call_id = data.get("litellm_call_id")
    return str(call_id) if call_id else None
