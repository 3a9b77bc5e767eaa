"""The OpenAI-compatible personalising proxy as an ASGI app: :func:`create_app`.

Any OpenAI client works unchanged by pointing its base URL here; every chat completion goes
through :class:`persona_mw.Middleware` (profile → bounds → personalisation → model → output
bounds → usage). Beside it: the profile API (tier 3 only; tiers 1 and 2 live in the config and
no endpoint writes them), usage, erasure, the effective policy, health and metrics.

Usage, erasure and the policy explanation come from the middleware's public methods
(:meth:`~persona_mw.Middleware.usage_report`, :meth:`~persona_mw.Middleware.erase_user`,
:meth:`~persona_mw.Middleware.explain_policy`), never from its stages directly: a stage takes
part by implementing :class:`~persona_mw.types.ReportsUsage`,
:class:`~persona_mw.types.HoldsUserData` or :class:`~persona_mw.types.ExplainsPolicy`, and
needs to know nothing about the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from persona_mw import (
    Middleware,
    PersonaError,
    Profile,
    ProfileConflictError,
    __version__,
    build_middleware,
    merge_patch,
    parse_profile,
    tracing,
    update_profile,
)
from persona_mw.bounds import BoundsInputStage
from persona_mw.compliance import PROVENANCE_FIELD, PROVENANCE_HEADER
from persona_mw.demo_model import DEMO_MODEL, register_demo_model
from persona_mw.enforce import NOTICES_FIELD, NOTICES_HEADER
from persona_mw.llm import LiteLLMClient, import_litellm
from persona_mw.observability import get_logger, render_metrics

from .admin import admin_router
from .asgi import OPEN_STREAMS, BodySizeLimit, InstanceHeader, RequestMetrics
from .auth import DEPLOYER_FIELDS, Action, Principal, deny_reason, deployer_fields_changed
from .config import LITELLM_SETTINGS_APPLIED, ServerConfig
from .errors import ApiError, from_exception
from .keys import find_key
from .responses import ResponseObject, ResponsesRequest, response_events, response_json, sse
from .streaming import END, Pump
from .wire import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    chunk_json,
    completion_json,
    usage_chunk_json,
)

__all__ = ["REJECTED_EVENT", "USER_HEADER", "create_app"]

#: The event logged for every request answered with a 4xx (its ``status`` and ``reason``).
REJECTED_EVENT = "request.rejected"

#: The header that names the end user; it takes precedence over the body's ``user`` field.
USER_HEADER = "X-Persona-User"
JURISDICTION_HEADER = "X-Persona-Jurisdiction"


def _request_laws(header: str | None, trusted: bool) -> tuple[str, ...]:
    """The laws a trusted gateway says apply to this request (none without the header)."""
    if header is None:
        return ()
    if not trusted:
        raise ApiError(
            400,
            f"the {JURISDICTION_HEADER} header is not accepted here: set "
            "server.trust_jurisdiction_header: true when a gateway you run sets it (and strips "
            "it from end users), or set the profile's `jurisdictions`",
            param=JURISDICTION_HEADER,
        )
    from persona_mw.compliance import known_codes

    codes = tuple(code.strip() for code in header.split(",") if code.strip())
    unknown = [code for code in codes if code not in known_codes()]
    if unknown:
        raise ApiError(
            400,
            f"unknown jurisdiction(s) {unknown} in {JURISDICTION_HEADER}; use codes from "
            f"{list(known_codes())}",
            param=JURISDICTION_HEADER,
        )
    return codes


_log = get_logger("persona_mw.server")
_OPEN = Principal(name="(no api keys configured)", role="open")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 412, 413, 502, 503, 504)
}
#: A profile write whose text an input rule would block or redact in the system prompt.
_PROFILE_WRITE_ERRORS = {**_ERRORS, 422: {"model": ErrorResponse}}


@dataclass
class _State:
    config: ServerConfig
    mw: Middleware
    models: list[str]
    key_entries: list[tuple[str, Principal]]
    streams: set[asyncio.Task[None]] = field(default_factory=set)


_BEARER = HTTPBearer(auto_error=False, description="an API key from the server config")


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Principal:
    """The caller, from the bearer key (constant-time comparison against every hash)."""
    state: _State = request.app.state.persona
    if not state.key_entries:
        return _OPEN
    if credentials is None:
        raise ApiError(
            401,
            "missing API key; send `Authorization: Bearer <key>`",
            type="authentication_error",
            code="invalid_api_key",
        )
    found = find_key(credentials.credentials, state.key_entries)
    if found is None:
        raise ApiError(401, "invalid API key", type="authentication_error", code="invalid_api_key")
    # the key's name (never the key) on every event of this request, request.completed included
    structlog.contextvars.bind_contextvars(api_key=found.name)
    return found


Who = Annotated[Principal, Depends(_principal)]


def create_app(
    config: ServerConfig | None = None, *, middleware: Middleware | None = None
) -> FastAPI:
    """The server as an ASGI app. Give ``middleware`` to serve one you built yourself (its
    ``aclose`` is still called at shutdown); otherwise it is built from ``config.persona``."""
    config = config or ServerConfig()
    for name, value in config.environment_variables.items():
        os.environ.setdefault(name, value)
    models = _model_names(config)
    if middleware is None:
        _apply_litellm_settings(config.litellm_settings)
        if any(m.startswith("persona-demo/") for m in _upstream_models(config)):
            register_demo_model()
        middleware = build_middleware(config.persona, llm=_llm_client(config))
    state = _State(
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
        _log.info("server.started", models=models, auth=config.auth_enabled, version=__version__)
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

    def allow(who: Principal, action: Action, user_id: str | None = None) -> None:
        reason = deny_reason(who, action, user_id)
        if reason is not None:
            raise ApiError(403, reason, type="permission_error", code="forbidden")

    # -- completions ---------------------------------------------------------------------------

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={
            200: {
                "model": ChatCompletion,
                "description": "The answer; with `stream: true` a "
                "text/event-stream of ChatCompletionChunk events ending in `data: [DONE]`.",
            },
            **_ERRORS,
        },
        tags=["openai"],
    )
    async def chat_completions(
        body: ChatCompletionRequest,
        who: Who,
        x_persona_user: str | None = Header(
            default=None, description="the end user; wins over `user`"
        ),
        x_persona_jurisdiction: str | None = Header(
            default=None,
            description="law codes that apply to this user, comma-separated (a trusted "
            "gateway's header; needs server.trust_jurisdiction_header)",
        ),
    ) -> Response:
        """Chat completion, personalised for the end user and held within the bounds."""
        allow(who, "complete")
        laws = _request_laws(x_persona_jurisdiction, config.server.trust_jurisdiction_header)
        user = end_user(x_persona_user or body.user, body.model)
        kwargs = body.llm_kwargs()
        kwargs["timeout"] = config.server.upstream_timeout_s
        call = {
            "user": user,
            "model": body.model,
            "messages": body.messages,
            "surface": "server",
            "jurisdictions": laws,
            **kwargs,
        }
        if not body.stream:
            response = await state.mw.acompletion(**call)
            return JSONResponse(
                completion_json(response, body.model), headers=_notice_headers(response)
            )
        pump: Pump[Any] = Pump(state.mw.astream(**call), tracked=state.streams)
        try:
            first = await pump.get()
        except BaseException:
            pump.cancel()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(
                pump,
                first,
                model=body.model,
                messages=body.messages,
                include_usage=include_usage,
                choices=body.n or 1,
            ),
            media_type="text/event-stream",
            headers={
                "cache-control": "no-cache",
                "x-accel-buffering": "no",
                **_notice_headers(first),
            },
        )

    def end_user(user: str | None, model: str) -> str:
        """The request's end user, once the model is known to be served here."""
        if not user:
            raise ApiError(
                400,
                f"no end-user id: set the request's `user` field or the {USER_HEADER} "
                "header (the profile and the limits are per user)",
                param="user",
            )
        if model not in state.models:
            raise ApiError(
                404,
                f"model {model!r} is not served here; GET /v1/models lists "
                f"the models ({', '.join(state.models)})",
                code="model_not_found",
                param="model",
            )
        return user

    @app.post(
        "/v1/responses",
        response_model=None,
        responses={
            200: {
                "model": ResponseObject,
                "description": "The Response; with `stream: true` a text/event-stream of "
                "Responses events ending in `response.completed` (its status `incomplete` "
                "when a rule stopped the reply).",
            },
            **_ERRORS,
        },
        tags=["openai"],
    )
    async def create_response(
        body: ResponsesRequest,
        who: Who,
        x_persona_user: str | None = Header(
            default=None, description="the end user; wins over `user`"
        ),
    ) -> Response:
        """OpenAI's Responses API, on the same path as chat completions (profile, bounds on
        input and output, signals). Stateless: no `previous_response_id`, no stored responses."""
        allow(who, "complete")
        user = end_user(x_persona_user or body.user, body.model)
        messages, kwargs = body.chat_call()
        kwargs["timeout"] = config.server.upstream_timeout_s
        call = {
            "user": user,
            "model": body.model,
            "messages": messages,
            "surface": "server",
            **kwargs,
        }
        if not body.stream:
            reply = await state.mw.acompletion(**call)
            return JSONResponse(response_json(body, reply), headers=_notice_headers(reply))
        pump: Pump[Any] = Pump(state.mw.astream(**call), tracked=state.streams)
        try:
            first = await pump.get()
        except BaseException:
            pump.cancel()
            raise
        return StreamingResponse(
            _response_sse(pump, first, body),
            media_type="text/event-stream",
            headers={
                "cache-control": "no-cache",
                "x-accel-buffering": "no",
                **_notice_headers(first),
            },
        )

    @app.get("/v1/models/{model_id}", response_model=ModelCard, responses=_ERRORS, tags=["openai"])
    async def get_model(model_id: str, who: Who) -> dict[str, Any]:
        """One served model (404 with the served names when it is not one of them)."""
        allow(who, "read_models")
        if model_id not in state.models:
            raise ApiError(
                404,
                f"model {model_id!r} is not served here; the models are {', '.join(state.models)}",
                code="model_not_found",
                param="model_id",
            )
        return _model_card(model_id)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["openai"])
    async def list_models(who: Who) -> dict[str, Any]:
        """The model names clients may ask for (the config's `model_list`)."""
        allow(who, "read_models")
        return {"object": "list", "data": [_model_card(m) for m in state.models]}

    # -- profiles, usage, erasure, policy ------------------------------------------------------

    @app.get(
        "/v1/users/{user_id}/profile", response_model=Profile, responses=_ERRORS, tags=["users"]
    )
    async def get_profile(user_id: str, who: Who) -> Response:
        """The user's tier-3 profile (the default one when nothing is stored; version 0).
        The ETag is the profile version: send it back in If-Match to update safely."""
        allow(who, "read_profile", user_id)
        profile = await state.mw.store.get(user_id) or state.mw.default_profile(user_id)
        return _profile_response(profile)

    profile_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Profile"}}},
        }
    }
    patch_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/merge-patch+json": {
                    "schema": {
                        "type": "object",
                        "description": "RFC 7396 merge patch of the Profile; null removes a field",
                    }
                }
            },
        }
    }

    @app.put(
        "/v1/users/{user_id}/profile",
        response_model=Profile,
        responses=_PROFILE_WRITE_ERRORS,
        openapi_extra=profile_body,
        tags=["users"],
    )
    async def put_profile(
        user_id: str,
        request: Request,
        who: Who,
        if_match: str | None = Header(
            default=None, description="the ETag you read; 412 if it changed"
        ),
    ) -> Response:
        """Replace the user's profile."""
        allow(who, "write_profile", user_id)
        data = _strip_owned(await _json_object(request), user_id)

        def replace(current: Profile) -> Profile:
            # a user's replace that leaves the deployer's fields out keeps them
            owned = {f: getattr(current, f) for f in DEPLOYER_FIELDS} if who.role == "user" else {}
            return parse_profile({**owned, **data}, user_id=user_id)

        return _profile_response(await _write(state, who, user_id, replace, if_match))

    @app.patch(
        "/v1/users/{user_id}/profile",
        response_model=Profile,
        responses=_PROFILE_WRITE_ERRORS,
        openapi_extra=patch_body,
        tags=["users"],
    )
    async def patch_profile(
        user_id: str,
        request: Request,
        who: Who,
        if_match: str | None = Header(
            default=None, description="the ETag you read; 412 if it changed"
        ),
    ) -> Response:
        """Change part of the user's profile (JSON Merge Patch, RFC 7396)."""
        allow(who, "write_profile", user_id)
        patch = _strip_owned(await _json_object(request), user_id)

        def change(current: Profile) -> Profile:
            body = current.model_dump(mode="json", exclude={"version", "user_id"})
            return parse_profile(merge_patch(body, patch), user_id=user_id)

        return _profile_response(await _write(state, who, user_id, change, if_match))

    @app.delete("/v1/users/{user_id}/profile", responses=_ERRORS, tags=["users"])
    async def delete_profile(user_id: str, who: Who) -> dict[str, Any]:
        """Delete the user's stored profile (they get the default profile from now on). A user
        key keeps the deployer-owned fields (minor status), in the same atomic step."""
        allow(who, "write_profile", user_id)
        deleted = await state.mw.store.delete(user_id, keep=_kept(who))
        return {"user": user_id, "deleted": deleted}

    def _kept(who: Principal) -> tuple[str, ...]:
        """What a user key may not shed by deleting: the deployer-owned fields."""
        return DEPLOYER_FIELDS if who.role == "user" else ()

    @app.get("/v1/users/{user_id}/usage", responses=_ERRORS, tags=["users"])
    async def get_usage(user_id: str, who: Who) -> dict[str, Any]:
        """The user's self-set limits and, where stages report it, their usage by stage."""
        allow(who, "read_usage", user_id)
        profile, _ = await state.mw.load_profile(user_id)
        reports = _jsonable(await state.mw.usage_report(user_id))
        return {
            "user": user_id,
            "limits": profile.limits.model_dump(mode="json"),
            "usage": reports or None,
            "recording": bool(reports),
        }

    @app.delete("/v1/users/{user_id}", responses=_ERRORS, tags=["users"])
    async def erase_user(user_id: str, who: Who) -> dict[str, Any]:
        """Erase everything stored about the user: profile and, where recorded, usage."""
        allow(who, "erase_user", user_id)
        erased = _jsonable(await state.mw.erase_user(user_id, keep=_kept(who)))
        return {"user": user_id, "erased": erased}

    @app.get("/v1/policy", responses=_ERRORS, tags=["policy"])
    async def get_policy(
        who: Who,
        user: str | None = Query(
            default=None, description="explain the policy as it applies to this user"
        ),
    ) -> dict[str, Any]:
        """The effective policy, explained: the rules in force, their tier and why. Read-only:
        tier-1 and tier-2 rules come from the deployment's config and cannot be changed here."""
        allow(who, "read_policy", user)
        profile = (
            (await state.mw.load_profile(user))[0]
            if user
            else state.mw.default_profile("(any user)")
        )
        explained = _jsonable(state.mw.explain_policy(profile))
        settings = state.mw.settings
        return {
            "user": user,
            "tiers": {
                "1": "law and society: immutable; neither the deployer at run time nor users "
                "can change it",
                "2": "the deployer's policy (this server's config); users choose only inside "
                "ranges the deployer marks user-adjustable",
                "3": "the user's own profile: can only narrow what tiers 1 and 2 allow",
            },
            "stages": {
                "input": [s.name for s in state.mw.input_stages],
                "output": [s.name for s in state.mw.output_stages],
                "finish": [s.name for s in state.mw.finish_stages],
            },
            "explained": explained,
            "settings": {
                "on_store_error": settings.on_store_error,
                "log_message_text": settings.log_message_text,
                "profile_cache_ttl_s": settings.profile_cache_ttl_s,
            },
            "models": state.models,
        }

    # -- operations ----------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["operations"], responses={503: {"description": "a dependency is down"}}
    )
    async def readyz() -> Response:
        """Ready for traffic: the profile store answers (when it is Redis)."""
        answers = await state.mw.store.ping()
        if answers is False:
            return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ready", "store": "embedded" if answers is None else "ok"})

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics, summed over every worker (no user ids in any label)."""
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    app.include_router(admin_router(_principal, allow, _ERRORS))
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


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": int(time.time()), "owned_by": "persona_mw"}


async def _response_sse(
    pump: Pump[Any], first: Any, request: ResponsesRequest
) -> AsyncIterator[bytes]:
    """Responses events in SSE framing; a failure after the status line is sent in-band as an
    ``error`` event, and the upstream call stops when the client goes away."""
    OPEN_STREAMS.inc()
    try:
        async for event in response_events(pump, first, request):
            yield sse(event)
    except Exception as exc:
        error = from_exception(exc)
        _log.warning("stream.failed", error=error.message, status=error.status)
        body = error.body()["error"]
        yield sse({"type": "error", "sequence_number": 0, **body})
    finally:
        pump.cancel()
        OPEN_STREAMS.dec()


def _notice_headers(reply: Any) -> dict[str, str]:
    """The notices out of band and the provenance marker, as headers too (JSON, ASCII-escaped:
    headers are latin-1)."""
    notices = getattr(reply, NOTICES_FIELD, None)
    headers = {NOTICES_HEADER: json.dumps(notices)} if notices else {}
    marker = getattr(reply, PROVENANCE_FIELD, None)
    if marker is not None:
        headers[PROVENANCE_HEADER] = json.dumps(marker)
    return headers


async def _sse(
    pump: Pump[Any],
    first: Any,
    *,
    model: str,
    messages: list[dict[str, Any]],
    include_usage: bool,
    choices: int = 1,
) -> AsyncIterator[bytes]:
    """OpenAI's SSE framing: ``data: <chunk>\\n\\n`` ..., maybe a usage chunk, ``data: [DONE]``.

    Without a usage chunk to wait for, the answer ends with the chunk that carries the last of
    its ``choices`` finish_reasons (nothing follows it): the client gets ``[DONE]`` at once
    while the stream's end-of-call work (LiteLLM's bookkeeping, ~1.7 ms here; usage recording)
    goes on in the pump's task, which shutdown still waits for.
    """
    OPEN_STREAMS.inc()
    ident, created = f"chatcmpl-{int(time.time() * 1000)}", int(time.time())
    usage: Any = None
    text: list[str] = []
    finished: set[int] = set()
    detached = False
    try:
        item = first
        if item is not END:
            ident = getattr(item, "id", None) or ident
            created = int(getattr(item, "created", None) or created)
        while item is not END:
            usage = getattr(item, "usage", None) or usage
            if item.choices:
                text.extend(c.delta.content for c in item.choices if c.delta.content)
                body = chunk_json(
                    item, ident=ident, created=created, model=model, with_usage=include_usage
                )
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
                finished |= {c.index for c in item.choices if c.finish_reason is not None}
                if not include_usage and len(finished) >= choices:
                    pump.detach()
                    detached = True
                    break
            item = await pump.get()
        if include_usage:
            prompt, completion = _usage_counts(usage, model, messages, "".join(text))
            body = usage_chunk_json(
                ident=ident,
                created=created,
                model=model,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
            yield b"data: " + json.dumps(body).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # the status line is sent already: report in-band, as OpenAI does
        error = from_exception(exc)
        _log.warning("stream.failed", error=error.message, status=error.status)
        yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    finally:
        if not detached:
            pump.cancel()  # no-op when finished; on disconnect it stops the upstream call
        OPEN_STREAMS.dec()


def _usage_counts(
    usage: Any, model: str, messages: list[dict[str, Any]], text: str
) -> tuple[int, int]:
    """Token counts for the usage chunk: the model's own when the stream carried them, else
    LiteLLM's tokenizer estimate."""
    if usage is not None:
        return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    litellm = import_litellm()
    try:
        return (
            int(litellm.token_counter(model=model, messages=messages)),
            int(litellm.token_counter(model=model, text=text)) if text else 0,
        )
    except Exception:
        return sum(len(str(m.get("content", ""))) for m in messages) // 4, (len(text) + 3) // 4


def _profile_response(profile: Profile) -> Response:
    return JSONResponse(profile.model_dump(mode="json"), headers={"ETag": f'"{profile.version}"'})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"null")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object (a profile, or a merge patch of one)")
    return data


def _strip_owned(data: dict[str, Any], user_id: str) -> dict[str, Any]:
    """``version`` belongs to the store and ``user_id`` to the URL; reject a different id."""
    if data.get("user_id") not in (None, user_id):
        raise ApiError(
            400,
            f"user_id in the body ({data['user_id']!r}) differs from the URL; leave it out",
            param="user_id",
        )
    return {k: v for k, v in data.items() if k not in ("version", "user_id")}


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ApiError(
            400,
            f'If-Match must be an ETag from GET (a quoted version such as "3"), not {value!r}',
            param="If-Match",
        )
    return int(tag)


async def _write(
    state: _State,
    who: Principal,
    user_id: str,
    make: Callable[[Profile], Profile],
    if_match: str | None,
) -> Profile:
    expected = _parse_if_match(if_match)

    def change(current: Profile) -> Profile:
        if expected is not None and current.version != expected:
            raise ApiError(
                412,
                f"the profile is at version {current.version}, not {expected}: it "
                "changed since you read it; GET it again and reapply your change",
                type="precondition_failed",
                code="profile_changed",
                param="If-Match",
            )
        new = make(current)
        _check_profile_text(state.mw, current, new)
        if who.role == "user":
            changed = deployer_fields_changed(current, new)
            if changed:
                raise ApiError(
                    403,
                    f"{', '.join(changed)} can be set only by the deployer (an admin "
                    "key): they decide which protections apply",
                    type="permission_error",
                    code="deployer_field",
                    param=changed[0],
                )
        return new

    try:
        return await update_profile(
            state.mw.store,
            user_id,
            change,
            attempts=1 if expected is not None else 5,
            default=state.mw.default_profile,
        )
    except ProfileConflictError:
        if expected is not None:
            raise ApiError(
                412,
                "the profile changed while you were updating it; GET it again and "
                "reapply your change",
                type="precondition_failed",
                code="profile_changed",
                param="If-Match",
            ) from None
        raise


def _check_profile_text(mw: Middleware, current: Profile, new: Profile) -> None:
    """Profile text reaches the model in the system prompt: refuse what the input rules in
    force for this user would block or redact there (only in fields this write changes)."""
    for stage in mw.input_stages:
        if not isinstance(stage, BoundsInputStage):
            continue
        found = stage.check_profile_text(new, since=current)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise ApiError(
                422,
                found[0].describe() + more,
                code="profile_text_rule",
                param=found[0].field,
            )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return str(value)


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
