"""Two small ASGI middlewares (starlette style: ``__init__(app, ...)`` + ``__call__``, no
per-request state on ``self``): a request body size limit, and request metrics.

Metrics carry the route template (``/v1/users/{user_id}/profile``), never a user id: labels are
kept low-cardinality and free of personal data. The process-wide Prometheus registry is used, so
``/metrics`` also shows what other parts (e.g. the signals package) register there.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from persona_mw.observability import get_logger

from .errors import error_body

__all__ = [
    "INSTANCE_HEADER",
    "OPEN_STREAMS",
    "REQUESTS",
    "REQUEST_SECONDS",
    "BodySizeLimit",
    "InstanceHeader",
    "RequestMetrics",
]

_log = get_logger("persona_mw.server")
_USER_SEGMENT = re.compile(r"(/v1/users/)[^/]+")

#: Names the server process that answered (a random id, not the pid): with --workers N it tells
#: operators and tests which worker served a request.
INSTANCE_HEADER = b"x-persona-instance"

REQUESTS = Counter(
    "persona_mw_server_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "persona_mw_server_request_seconds",
    "Time from request to the end of the answer (whole stream for SSE), by route template.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
OPEN_STREAMS = Gauge(
    "persona_mw_server_open_streams",
    "Streamed answers in progress (summed over live workers).",
    multiprocess_mode="livesum",
)


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimit:
    """Answers 413 to a request body over ``max_bytes``: at once when Content-Length says so,
    else (chunked upload) as soon as the running total passes the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> dict[str, Any]:
        return error_body(
            f"request body is larger than this server's limit of {self.max_bytes} bytes "
            "(server.max_body_bytes in the config)",
            code="request_too_large",
        )

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = self._too_large()
        _log.warning(
            "request.rejected",
            method=scope["method"],
            path=_USER_SEGMENT.sub(r"\1{user_id}", scope["path"]),  # no raw user id in the log
            status=413,
            reason=body["error"]["message"],
            code=body["error"]["code"],
        )
        await send_json(send, 413, body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read it all here, counting, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Counts requests and times them to the last byte of the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            REQUESTS.labels(template, scope["method"], str(status)).inc()
            REQUEST_SECONDS.labels(template, scope["method"]).observe(time.perf_counter() - started)


class InstanceHeader:
    """Adds :data:`INSTANCE_HEADER` to every answer."""

    def __init__(self, app: ASGIApp, *, instance: str) -> None:
        self.app = app
        self.header = (INSTANCE_HEADER, instance.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)
