"""Operator logs: one structured event per request, pseudonymous user ids.

The library gets its loggers from :func:`get_logger` and never configures logging. While the
application has not configured structlog, events at info and above go to **stderr** with
structlog's default rendering (never stdout, which is the application's: a script that prints a
reply prints only the reply; debug events, one per recorded message, are not even built); once
it has (:func:`configure_logging`, or its own ``structlog.configure``), they follow that
configuration. The CLI and the server call :func:`configure_logging` to render JSON lines on
stderr. User ids are pseudonymised with a keyed HMAC (the deployment secret), so logs can be
joined per user without naming anyone; message text appears only when an operator turns
``log_message_text`` on.

The Prometheus side of observability is :mod:`persona_mw.metrics`; its names are re-exported
here, where they were first published.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import sys
from typing import Any, TextIO

import structlog

from .metrics import (
    LABEL_VALUES_LIMIT,
    MULTIPROC_ENV,
    CallMetrics,
    MetricsStage,
    UsageBooks,
    render_metrics,
)
from .types import CallContext

__all__ = [
    "LABEL_VALUES_LIMIT",
    "MULTIPROC_ENV",
    "REQUEST_EVENT",
    "CallMetrics",
    "MetricsStage",
    "UsageBooks",
    "UserHasher",
    "configure_logging",
    "get_logger",
    "render_metrics",
    "request_event",
    "route_library_logs",
]

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
        if self.ephemeral and not raw:
            _warn_ephemeral_secret()

    def __call__(self, user_id: str) -> str:
        if self.raw:
            return user_id
        hashed = self._cache.get(user_id)
        if hashed is None:
            hashed = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:16]
            if len(self._cache) < 100_000:
                self._cache[user_id] = hashed
        return hashed


@functools.cache  # once per process, not per middleware
def _warn_ephemeral_secret() -> None:
    get_logger("persona_mw").warning(
        "config.ephemeral_hash_secret",
        hint="set PERSONA_MW_HASH_SECRET (or settings.hash_secret) so user hashes in logs are "
        "stable across processes and restarts",
    )


def request_event(ctx: CallContext, *, include_text: bool = False) -> dict[str, Any]:
    """The keys of the per-request event. Stable: operators build dashboards on them."""
    event: dict[str, Any] = {
        "request_id": ctx.request_id,
        "user": ctx.user_hash,
        "surface": ctx.surface,
        "model": ctx.model,
        "stream": ctx.stream,
        "outcome": ctx.outcome,
        # what an HTTP host answers; 499 (nginx's "client closed request") when the caller left
        "http_status": ctx.error_status or (499 if ctx.outcome == "cancelled" else 200),
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


#: An unconfigured structlog filters nothing; the library's own default is info and above.
_UNCONFIGURED_LEVEL = structlog.make_filtering_bound_logger(logging.INFO)


class _LibraryLogger(structlog._config.BoundLoggerLazyProxy):
    """structlog's lazy logger, except that an unconfigured structlog prints info and above to
    stderr, that
    :func:`route_library_logs` sends the library's events (only those) elsewhere, and that the
    logger it assembles is kept until structlog's configuration (or the route) changes.

    The lazy proxy assembles a new bound logger (context, factory call, wrapper) for every log
    call unless the application turned on ``cache_logger_on_first_use``: about as dear as the
    event itself, paid even when the level filters the event out. Keeping it per configuration
    (the configured objects themselves, compared by identity, so a ``structlog.configure`` or
    ``reset_defaults`` is seen at the next call) keeps a filtered call to a few hundred
    nanoseconds; :meth:`is_enabled_for` lets a caller skip building an event nobody sees.
    """

    def __init__(self, name: str) -> None:
        super().__init__(None, logger_factory_args=(name,))
        self._assembled: tuple[tuple[object, ...], Any] | None = None

    def bind(self, **new_values: Any) -> Any:
        logger = self._current()
        return logger.bind(**new_values) if new_values else logger

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` (a ``logging`` level) would be processed at all."""
        logger = self._current()
        check = getattr(logger, "is_enabled_for", None) or getattr(logger, "isEnabledFor", None)
        return True if check is None else bool(check(level))

    def _current(self) -> Any:
        config = structlog._config._CONFIG
        key = (
            structlog.is_configured(),
            config.default_wrapper_class,
            config.default_processors,
            config.logger_factory,
            config.default_context_class,
            sys.stderr,  # where an unconfigured structlog prints (a test may swap it)
            _library_route,
        )
        assembled = self._assembled
        if assembled is not None and all(a is b for a, b in zip(assembled[0], key, strict=True)):
            return assembled[1]
        if _library_route is not None:
            processors, wrapper_class, stream = _library_route
            logger = structlog.wrap_logger(
                structlog.PrintLogger(stream),
                processors=processors,
                wrapper_class=wrapper_class,
                **self._initial_values,
            ).bind()
        elif key[0]:
            logger = super().bind()
        else:
            stderr = structlog.PrintLogger(sys.stderr)
            logger = structlog.wrap_logger(
                stderr, wrapper_class=_UNCONFIGURED_LEVEL, **self._initial_values
            ).bind()
        self._assembled = (key, logger)
        return logger


def get_logger(name: str) -> Any:
    """The library's logger ``name`` (see the module docstring: stderr until the application
    configures structlog, then its configuration)."""
    return _LibraryLogger(name)


def configure_logging(
    *, json: bool = True, stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    """Render structlog events as JSON lines (or a readable console form) on ``stream``
    (stderr unless given), at ``level`` and above.

    For applications, the CLI and the server; the library itself never calls this. Without it
    (and without the application's own ``structlog.configure``) the library still logs to
    stderr (info and above), in structlog's default console form.
    """
    structlog.configure(
        processors=_processors(json=json),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


#: Where :func:`route_library_logs` sends the library's events: (processors, wrapper, stream).
_library_route: tuple[list[Any], Any, TextIO] | None = None


def route_library_logs(
    *, json: bool | None = True, stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    """Render the library's own events (loggers from :func:`get_logger`) as JSON lines (or the
    console form) on ``stream``, leaving the process's structlog configuration untouched.

    For a plugin inside someone else's process (the LiteLLM proxy), which must not configure
    the host's logging. ``json=None`` undoes it: the library's events follow structlog again.
    """
    global _library_route
    _library_route = (
        None
        if json is None
        else (
            _processors(json=json),
            structlog.make_filtering_bound_logger(level),
            stream or sys.stderr,
        )
    )


def _processors(*, json: bool) -> list[Any]:
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
