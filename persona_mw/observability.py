"""Operator logs: one structured event per request, privacy first.

The library only calls ``structlog.get_logger``; it never configures logging. The CLI and the
server call :func:`configure_logging` to render JSON lines. User ids are pseudonymised with a
keyed HMAC (the deployment secret), so logs can be joined per user without naming anyone;
message text appears only when an operator turns ``log_message_text`` on.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys
from typing import Any, TextIO

import structlog

from .types import CallContext

__all__ = ["REQUEST_EVENT", "UserHasher", "configure_logging", "request_event"]

REQUEST_EVENT = "request.completed"
SECRET_ENV = "PERSONA_MW_HASH_SECRET"


class UserHasher:
    """Turns a user id into a stable pseudonym: HMAC-SHA256 with the deployment secret, 16 hex.

    Without a secret (argument or ``PERSONA_MW_HASH_SECRET``) a random one is made per process
    and a warning is logged once: hashes then differ between processes and restarts.
    """

    def __init__(self, secret: str | bytes | None = None, *, raw: bool = False) -> None:
        if secret is None:
            secret = os.environ.get(SECRET_ENV)
        self.ephemeral = secret is None
        if secret is None:
            secret = secrets.token_bytes(32)
        self._key = secret.encode() if isinstance(secret, str) else secret
        self.raw = raw
        self._cache: dict[str, str] = {}

    def __call__(self, user_id: str) -> str:
        if self.raw:
            return user_id
        hashed = self._cache.get(user_id)
        if hashed is None:
            hashed = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:16]
            if len(self._cache) < 100_000:
                self._cache[user_id] = hashed
        return hashed


def request_event(ctx: CallContext, *, include_text: bool = False) -> dict[str, Any]:
    """The keys of the per-request event. Stable: operators build dashboards on them."""
    event: dict[str, Any] = {
        "request_id": ctx.request_id,
        "user": ctx.user_hash,
        "surface": ctx.surface,
        "model": ctx.model,
        "stream": ctx.stream,
        "outcome": ctx.outcome,
        "finish_reason": ctx.finish_reason,
        "profile_source": ctx.profile_source,
        "profile_version": ctx.profile.version,
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
        "timings_ms": {k: round(v, 3) for k, v in ctx.timings_ms.items()},
        "decisions": [
            {
                "rule": d.rule_id,
                "tier": d.tier,
                "stage": d.stage,
                "detector": d.detector,
                "action": d.action,
                "spans": len(d.spans),
            }
            for d in ctx.decisions
        ],
        "notices": [n.source for n in ctx.notices],
        "exposure": sorted(ctx.exposure.parts),
        "reduced": ctx.exposure.reduced,
    }
    if ctx.error:
        event["error"] = ctx.error
    if include_text:
        event["messages"] = ctx.prompt_messages
        event["output"] = ctx.output_text
    return event


def configure_logging(
    *, json: bool = True, stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    """Render structlog events as JSON lines (or a readable console form) on ``stream``.

    For applications, the CLI and the server; the library itself never calls this.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
