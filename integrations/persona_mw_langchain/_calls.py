"""The steps of one call, built from :class:`persona_mw.Middleware`'s public parts.

The middleware's own ``acompletion`` / ``astream`` call the model through LiteLLM; here the model
is a LangChain chat model, so the same steps run around it instead: ``Middleware.begin`` (the
profile), the input stages, the enforcement engine (``Middleware.enforcer``) over the output,
the finish stages and one ``request.completed`` log event, so a LangChain call is checked,
recorded and logged exactly like a direct one (``surface="langchain"``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from persona_mw import (
    BoundsError,
    CallContext,
    ConfigError,
    InputBlocked,
    Middleware,
    OutputBlocked,
)
from persona_mw.enforce import block_message
from persona_mw.types import Message

from .messages import USER_KEY

__all__ = [
    "SURFACE",
    "begin",
    "block_error",
    "finish",
    "ms_since",
    "resolve_user",
    "run_input_stages",
]

SURFACE = "langchain"


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
    request: Mapping[str, Any] | None = None,
) -> CallContext:
    """Load the profile and make the call's context. The LangChain model carries its own
    parameters, so no LiteLLM keywords travel with the call; ``request`` (the call's bound
    kwargs: ``tools``, ``response_format``) decides whether notices go out of band."""
    return await mw.begin(
        user,
        model,
        messages,
        {},
        stream=stream,
        surface=SURFACE,
        request=request or {},
        request_id=request_id,
    )


async def run_input_stages(mw: Middleware, ctx: CallContext) -> None:
    await mw.run_input_stages(ctx)


async def finish(mw: Middleware, ctx: CallContext) -> None:
    """Finish stages (usage recording) and the request event; never raises."""
    await mw.finish(ctx)


def block_error(ctx: CallContext, *, stage: str) -> BoundsError:
    """The typed error a callback raises to abort a blocked call: InputBlocked on input,
    OutputBlocked on output; both carry the tier, the rule id and the user-facing message."""
    decision = next(
        (d for d in reversed(ctx.decisions) if d.action == "block" and d.stage == stage), None
    )
    message = ctx.reply if stage == "input" and ctx.reply else block_message(ctx)
    tier = decision.tier if decision is not None else 0
    rule = decision.rule_id if decision is not None else "unknown"
    return (InputBlocked if stage == "input" else OutputBlocked)(message, tier=tier, rule_id=rule)


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
