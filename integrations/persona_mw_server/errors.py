"""Errors in OpenAI's wire format: ``{"error": {"message", "type", "param", "code"}}``.

OpenAI clients read the status code (the ``openai`` SDK raises ``BadRequestError`` for 400,
``AuthenticationError`` for 401, ...) and show ``message``. Our messages say what was wrong and
how to fix it; an unexpected failure says only that, with the request id to find it in the log.
"""

from __future__ import annotations

from typing import Any

from persona_mw import (
    BoundsError,
    ConfigError,
    PersonaError,
    ProfileConflictError,
    ProfileValidationError,
    StoreError,
    UpstreamError,
    UpstreamTimeout,
)
from persona_mw.errors import http_status

__all__ = ["ApiError", "error_body", "from_exception"]


class ApiError(Exception):
    """An error answer: HTTP status plus OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_exception(exc: BaseException, *, request_id: str = "") -> ApiError:
    """The answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ProfileValidationError):
        param = exc.problems[0][0] if exc.problems else None
        return ApiError(400, str(exc), code="invalid_profile", param=param)
    if isinstance(exc, ConfigError):
        return ApiError(400, str(exc), param=exc.field)
    if isinstance(exc, ProfileConflictError):
        return ApiError(409, str(exc), type="conflict_error", code="profile_conflict")
    if isinstance(exc, UpstreamTimeout):
        return ApiError(
            504,
            f"{exc}; the server's upstream timeout is server.upstream_timeout_s",
            type="timeout_error",
            code="upstream_timeout",
        )
    if isinstance(exc, UpstreamError):
        status = http_status(exc)
        kind = (
            "rate_limit_error"
            if status == 429
            else ("invalid_request_error" if status < 500 else "upstream_error")
        )
        return ApiError(status or 502, str(exc), type=kind, code="upstream_error")
    if isinstance(exc, StoreError):
        return ApiError(
            503,
            f"{exc}; the profile store is unavailable and the deployment fails closed",
            type="service_unavailable_error",
            code="store_unavailable",
        )
    if isinstance(exc, BoundsError):
        return ApiError(400, exc.user_message, code="content_filter")
    suffix = f" (request id {request_id})" if request_id else ""
    if isinstance(exc, PersonaError):
        return ApiError(500, f"{exc}{suffix}", type="server_error")
    return ApiError(
        500, f"internal error; the server log has the details{suffix}", type="server_error"
    )
