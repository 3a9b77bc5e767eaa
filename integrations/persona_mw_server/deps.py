"""What every route of the server needs, as FastAPI dependencies: the server's state
(``request.app.state.persona``), the caller (from the bearer key) and the permission check, the
end user of a call, and the error responses the routes document.

The routers (:mod:`.routes`) hold no state of their own: :func:`~.app.create_app` puts one
:class:`ServerState` on the app and every route reads it through :data:`State`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from persona_mw import Middleware

from .auth import Action, Principal, deny_reason
from .config import ServerConfig
from .errors import ApiError
from .keys import find_key
from .wire import ErrorResponse

__all__ = [
    "ERRORS",
    "JURISDICTION_HEADER",
    "PROFILE_WRITE_ERRORS",
    "USER_HEADER",
    "ServerState",
    "State",
    "Who",
    "allow",
    "end_user",
    "principal",
]

#: The header that names the end user; it takes precedence over the body's ``user`` field.
USER_HEADER = "X-Persona-User"
#: Law codes a trusted gateway says apply to the request (``server.trust_jurisdiction_header``).
JURISDICTION_HEADER = "X-Persona-Jurisdiction"

#: The error responses a route documents (OpenAI's error body).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 412, 413, 502, 503, 504)
}
#: A profile write whose text an input rule would block or redact in the system prompt.
PROFILE_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 422: {"model": ErrorResponse}}


@dataclass
class ServerState:
    """The one per-app state every route reads: the config, the middleware, the served model
    names, the API keys (hashes) and the streams still running (shutdown waits for them)."""

    config: ServerConfig
    mw: Middleware
    models: list[str]
    key_entries: list[tuple[str, Principal]]
    streams: set[asyncio.Task[None]] = field(default_factory=set)


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.persona
    return state


State = Annotated[ServerState, Depends(server_state)]

_OPEN = Principal(name="(no api keys configured)", role="open")
_BEARER = HTTPBearer(auto_error=False, description="an API key from the server config")


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Principal:
    """The caller, from the bearer key (constant-time comparison against every hash)."""
    state = server_state(request)
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


Who = Annotated[Principal, Depends(principal)]


def allow(who: Principal, action: Action, user_id: str | None = None) -> None:
    """Refuse (403, with the reason) what the caller's role may not do."""
    reason = deny_reason(who, action, user_id)
    if reason is not None:
        raise ApiError(403, reason, type="permission_error", code="forbidden")


def end_user(state: ServerState, user: str | None, model: str) -> str:
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
