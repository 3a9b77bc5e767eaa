"""W3C trace context for the server: the ``traceparent`` (and ``tracestate``, baggage) of an
incoming request becomes the parent of the request's persona_mw spans (:mod:`persona_mw.tracing`).

Added by :func:`~persona_mw_server.create_app` only while tracing is on. When something upstream
in the process already made a span for the request (OpenTelemetry's ASGI instrumentation), that
span stays the parent: it took the same headers.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TraceContext"]


class TraceContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from opentelemetry import context, propagate, trace

        if scope["type"] != "http" or trace.get_current_span().get_span_context().is_valid:
            await self.app(scope, receive, send)
            return
        carrier: dict[str, Any] = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        token = context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
