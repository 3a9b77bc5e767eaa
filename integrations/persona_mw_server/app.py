"""The OpenAI-compatible personalising proxy as an ASGI app: :func:`create_app`.

Any OpenAI client works unchanged by pointing its base URL here; every chat completion goes
through :class:`persona_mw.Middleware` (profile → bounds → personalisation → model → output
bounds → usage). This module assembles the app: the middleware built from the config, one
:class:`~.deps.ServerState` on ``app.state.persona``, the routers of :mod:`.routes`
(completions, users, operations, admin), the ASGI middleware of :mod:`.asgi`, OpenAI-format
errors for everything that fails, and the shutdown that drains open streams.

A stage takes part in usage, erasure and the policy explanation by implementing
:class:`~persona_mw.types.ReportsUsage`, :class:`~persona_mw.types.HoldsUserData` or
:class:`~persona_mw.types.ExplainsPolicy`, and needs to know nothing about the server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from persona_mw import Middleware, PersonaError, __version__, build_middleware, tracing
from persona_mw.demo_model import DEMO_MODEL, register_demo_model
from persona_mw.llm import LiteLLMClient, import_litellm
from persona_mw.observability import get_logger

from .asgi import BodySizeLimit, InstanceHeader, RequestMetrics
from .auth import Principal
from .config import LITELLM_SETTINGS_APPLIED, ServerConfig
from .deps import USER_HEADER, ServerState
from .errors import ApiError, from_exception
from .routes import ROUTERS

__all__ = ["REJECTED_EVENT", "USER_HEADER", "create_app"]

#: The event logged for every request answered with a 4xx (its ``status`` and ``reason``).
REJECTED_EVENT = "request.rejected"

_log = get_logger("persona_mw.server")


def create_app(
    config: ServerConfig | None = None,
    *,
    middleware: Middleware | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """The server as an ASGI app. Give ``middleware`` to serve one you built yourself (its
    ``aclose`` is still called at shutdown); otherwise it is built from ``config.persona``.

    ``freeze_heap`` (what ``persona-mw serve`` sets; leave it off in a process you share, such
    as tests): once started, ``gc.freeze()`` what start-up built — LiteLLM, the compiled
    scanners, hundreds of thousands of objects that live as long as the process — so the
    garbage collector's full collections stop walking them (one took 313 ms live and 16 ms
    frozen, docs/benchmarks.md)."""
    config = config or ServerConfig()
    for name, value in config.environment_variables.items():
        os.environ.setdefault(name, value)
    models = _model_names(config)
    if middleware is None:
        _apply_litellm_settings(config.litellm_settings)
        if any(m.startswith("persona-demo/") for m in _upstream_models(config)):
            register_demo_model()
        middleware = build_middleware(config.persona, llm=_llm_client(config))
    state = ServerState(
        config=config,
        mw=middleware,
        models=models,
        key_entries=[
            (k.key_hash, Principal(name=k.name, role=k.role, user=k.user)) for k in config.api_keys
        ],
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not config.auth_enabled:
            _log.warning(
                "server.auth_disabled",
                message="NO API KEYS CONFIGURED: anyone who can reach this server may call models "
                "and read or change every profile. Serving on loopback only. Add server.api_keys "
                "to the config (see docs/proxy.md) before exposing it.",
            )
        for line in config.ignored:
            _log.warning("config.section_ignored", detail=line, source=config.persona.source)
        warm_ms = _warm(state.mw)
        if freeze_heap:
            gc.collect()
            gc.freeze()
        _log.info(
            "server.started",
            models=models,
            auth=config.auth_enabled,
            version=__version__,
            warm_ms=warm_ms,
            frozen_objects=gc.get_freeze_count(),
        )
        yield
        # uvicorn has stopped accepting and drained connections (up to its graceful timeout).
        if state.streams:
            _, pending = await asyncio.wait(state.streams, timeout=config.server.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await state.mw.aclose()
        _log.info("server.stopped")

    app = FastAPI(
        title="persona_mw proxy",
        version=__version__,
        description="OpenAI-compatible chat completions, personalised within bounds.",
        lifespan=lifespan,
    )
    app.state.persona = state
    _install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    _document_errors_as_sent(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.server.max_body_bytes)
    app.add_middleware(InstanceHeader, instance=secrets.token_hex(4))
    app.add_middleware(RequestMetrics)
    if tracing.wanted() and not tracing.enabled():
        tracing.instrument()
    if tracing.enabled():
        from .tracecontext import TraceContext

        app.add_middleware(TraceContext)
    return app


# -- helpers ------------------------------------------------------------------------------------


def _warm(mw: Middleware) -> float:
    """Resolve the rules in force for the deployment's default profile, which every new user
    has, before the first request: the bounds compile their scanners then (~0.3 s with every
    built-in pack; memoised per policy and profile shape), so no request waits for it. Returns
    how long it took, in ms."""
    started = time.perf_counter()
    mw.explain_policy(mw.default_profile("(start-up)"))
    return round((time.perf_counter() - started) * 1000, 1)


def _document_errors_as_sent(app: FastAPI) -> None:
    """The OpenAPI document as the server answers: FastAPI adds a 422 (its validation error) to
    every operation with a body or parameters, but a bad request is a 400 in OpenAI's format
    here (:func:`_install_error_handlers`). The only 422 left is the one a route declares."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    sent = operation.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in json.dumps(sent):
                        del operation["responses"]["422"]
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _upstream_models(config: ServerConfig) -> list[str]:
    if not config.persona.model_list:
        return [DEMO_MODEL]
    return [str(entry["litellm_params"]["model"]) for entry in config.persona.model_list]


def _model_names(config: ServerConfig) -> list[str]:
    if not config.persona.model_list:
        return [DEMO_MODEL]
    return list(dict.fromkeys(str(entry["model_name"]) for entry in config.persona.model_list))


def _llm_client(config: ServerConfig) -> LiteLLMClient | None:
    if not config.persona.model_list:
        return None
    return LiteLLMClient.from_model_list(
        config.persona.model_list,
        config.router_settings,
        timeout=config.server.upstream_timeout_s,
    )


def _apply_litellm_settings(settings: Mapping[str, Any]) -> None:
    if not settings:
        return
    litellm = import_litellm()
    ignored = sorted(set(settings) - LITELLM_SETTINGS_APPLIED)
    for name in sorted(set(settings) & LITELLM_SETTINGS_APPLIED):
        setattr(litellm, name, settings[name])
    if ignored:
        _log.warning(
            "config.litellm_settings_ignored",
            keys=ignored,
            hint="these LiteLLM-proxy features are not part of persona_mw's server",
        )


def _route(request: Request) -> str:
    """The route's template (``/v1/users/{user_id}/profile``): no user id in the log."""
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or "(no route)")


def _rejected(request: Request, error: ApiError) -> None:
    """One event per refused request: its status and why (the message names no user text:
    it is the same one the client gets; a profile-text refusal names the field, not the text)."""
    _log.warning(
        REJECTED_EVENT,
        method=request.method,
        path=_route(request),
        status=error.status,
        reason=_without_user_ids(request, error.message),
        code=error.code,
        param=error.param,
    )


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _without_user_ids(request: Request, message: str) -> str:
    """A refusal's message names what was wrong, sometimes by what the client sent (a model
    name, a user id, quoted): the log keeps the message with every quoted value as ``'…'``
    and the request's user id as ``<user>`` (logs carry only keyed hashes of user ids)."""
    for user in (request.path_params.get("user_id"), request.headers.get(USER_HEADER)):
        if user:
            message = message.replace(user, "<user>")
    return _QUOTED.sub("'…'", message)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        error = exc if isinstance(exc, ApiError) else from_exception(exc)
        if error.status >= 500:
            _log.error(
                "request.failed",
                path=_route(request),
                status=error.status,
                error=repr(exc),
            )
        else:
            _rejected(request, error)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        message = f"{param + ': ' if param else ''}{first['msg']}{more}"
        error = ApiError(400, message, param=param)
        _rejected(request, error)
        return JSONResponse(error.body(), status_code=400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error"
        )
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        error = ApiError(exc.status_code, message, type=kind)
        _rejected(request, error)
        return JSONResponse(
            error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(PersonaError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, api_error)
