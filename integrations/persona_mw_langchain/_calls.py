"""The steps of one call, built from :class:`persona_mw.Middleware`'s public parts.

The middleware's own ``acompletion`` / ``astream`` call the model through LiteLLM; here the model
is a LangChain chat model, so the same steps run around it instead: load the profile, the input
stages, the output filters (a :class:`persona_mw.FilterChain`), the finish stages and one
``request.completed`` log event. They mirror :mod:`persona_mw.pipeline` step for step, so a
LangChain call is recorded and logged exactly like a direct one (``surface="langchain"``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from persona_mw import (
    BoundsError,
    CallContext,
    ConfigError,
    FilterChain,
    InputBlocked,
    Middleware,
    PersonaError,
)
from persona_mw.observability import REQUEST_EVENT, request_event
from persona_mw.types import Message

from .messages import USER_KEY

__all__ = [
    "SURFACE",
    "begin",
    "block_error",
    "block_text",
    "finish",
    "mark_failed",
    "ms_since",
    "notices_text",
    "open_filters",
    "resolve_user",
    "run_input_stages",
    "with_notices",
]

SURFACE = "langchain"
WITHHELD = "[response withheld by a content policy]"

_log = structlog.get_logger("persona_mw.langchain")


def resolve_user(explicit: object, metadata: Mapping[str, Any] | None, default: str | None) -> str:
    """Who the call is for: ``explicit`` (from ``configurable`` or a bound kwarg), then
    ``metadata["persona_user"]``, then the default given to the handler or wrapper."""
    for candidate in (explicit, (metadata or {}).get(USER_KEY), default):
        if isinstance(candidate, str) and candidate:
            return candidate
        if candidate is not None and not isinstance(candidate, str):
            raise ConfigError(
                f"{USER_KEY} must be a non-empty string (the end user's id), "
                f"not {type(candidate).__name__}",
                field=USER_KEY,
            )
    raise ConfigError(
        "no end user for this call: pass config={'configurable': {'persona_user': '<id>'}} "
        "(or metadata={'persona_user': '<id>'}) to the LangChain call, or give the handler / "
        "wrapper a default_user",
        field=USER_KEY,
    )


async def begin(
    mw: Middleware,
    *,
    user: str,
    model: str,
    messages: list[Message],
    stream: bool,
    request_id: str | None = None,
) -> CallContext:
    """Load the profile and make the call's context (``Middleware._begin``'s public twin)."""
    if not messages:
        raise ConfigError("a chat model call needs at least one message", field="messages")
    started = time.perf_counter()
    profile, source = await mw.load_profile(user)
    ctx = CallContext(
        request_id=request_id or str(uuid.uuid4()),
        user_id=user,
        user_hash=mw.hash_user(user),
        model=model,
        messages=messages,
        prompt_messages=list(messages),
        stream=stream,
        llm_kwargs={},  # the LangChain model carries its own parameters
        profile=profile,
        profile_source=source,
        started_at=datetime.now(UTC),
        surface=SURFACE,
        _t0=started,
    )
    ctx.timings_ms["profile"] = ms_since(started)
    return ctx


async def run_input_stages(mw: Middleware, ctx: CallContext) -> None:
    """The input stages in order; the first one that answers (``ctx.reply``) ends the run."""
    for stage in mw.input_stages:
        started = time.perf_counter()
        await stage(ctx)
        ctx.timings_ms[stage.name] = ms_since(started)
        if ctx.reply is not None:
            ctx.outcome = "blocked"
            break


def open_filters(mw: Middleware, ctx: CallContext) -> FilterChain:
    return FilterChain([stage.open(ctx) for stage in mw.output_stages])


async def finish(mw: Middleware, ctx: CallContext) -> None:
    """Finish stages (usage recording), then the request event. Never raises: a failing
    recorder must not turn a good reply into an error; it is logged instead."""
    for stage in mw.finish_stages:
        started = time.perf_counter()
        try:
            await stage(ctx)
        except Exception as exc:
            _log.error("stage.failed", stage=stage.name, request_id=ctx.request_id, error=repr(exc))
        ctx.timings_ms[stage.name] = ms_since(started)
    ctx.timings_ms["total"] = ms_since(ctx._t0)
    event = request_event(ctx, include_text=mw.settings.log_message_text)
    if ctx.outcome == "error":
        _log.warning(REQUEST_EVENT, **event)
    else:
        _log.info(REQUEST_EVENT, **event)


def mark_failed(ctx: CallContext, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        ctx.outcome = "cancelled"
    elif isinstance(exc, Exception):
        ctx.outcome = "error"
        ctx.error = str(exc) if isinstance(exc, PersonaError) else type(exc).__name__


def block_text(ctx: CallContext, lead: str = "") -> str:
    """The user-facing message of the rule that blocked (the latest block decision)."""
    for decision in reversed(ctx.decisions):
        if decision.action == "block" and decision.message:
            return lead + decision.message
    return lead + WITHHELD


def block_error(ctx: CallContext, *, stage: str) -> BoundsError:
    """The typed error a callback raises to abort a blocked call: InputBlocked on input,
    BoundsError on output; both carry the tier, the rule id and the user-facing message."""
    decision = next(
        (d for d in reversed(ctx.decisions) if d.action == "block" and d.stage == stage), None
    )
    message = ctx.reply if stage == "input" and ctx.reply else block_text(ctx)
    tier = decision.tier if decision is not None else 0
    rule = decision.rule_id if decision is not None else "unknown"
    return (InputBlocked if stage == "input" else BoundsError)(message, tier=tier, rule_id=rule)


def notices_text(ctx: CallContext, position: str) -> str:
    return "\n\n".join(n.text for n in ctx.notices if n.position == position)


def with_notices(ctx: CallContext, text: str) -> str:
    parts = [notices_text(ctx, "before"), text, notices_text(ctx, "after")]
    return "\n\n".join(p for p in parts if p)


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
