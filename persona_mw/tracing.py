"""OpenTelemetry traces (the ``persona-mw[otel]`` extra): one span per call, a child per stage
and one for the model call, with the GenAI semantic-convention attributes.

Off unless :func:`instrument` was called (``persona-mw serve`` calls it when
``PERSONA_MW_TRACING=1``): then :meth:`Middleware.finish <persona_mw.Middleware.finish>` hands
each finished call to :func:`record_call`, which returns at once while tracing is off, so an
uninstrumented process pays one function call per request and never imports OpenTelemetry.

**How the spans are made.** The call's stages already time themselves
(``CallContext.timings_ms``, in the order they ran); when the call is over, :func:`record_call`
turns those timings into spans with explicit start and end times, under whatever span is current
(the server's request span, or the remote parent the server took from the ``traceparent``
header). Nothing is added to the call's own path, at the cost of spans that start where the
previous stage ended (the gaps between stages, a few microseconds, are not shown) and of spans
that cannot be parents of spans made during the call (e.g. LiteLLM's own).

Spans:

- ``persona_mw.call`` (INTERNAL): the whole call; ``user.hash`` (the keyed hash, never the id),
  ``persona_mw.outcome``, ``persona_mw.surface``, ``persona_mw.profile_source``, the rule ids that
  decided (``persona_mw.bounds.rules``) and the ladder's actions (``persona_mw.signals.actions``);
  status ERROR with ``error.type`` when the call failed.
- ``persona_mw.stage <name>``: ``profile``, each input stage, ``output`` (the output filters; for
  a stream they run while the model streams, so this span overlaps the model's), each finish stage.
- ``chat <model>`` (CLIENT): the model call, with ``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.temperature`` /
  ``max_tokens`` / ``top_p`` when given, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.response.finish_reasons`` and, streamed, ``persona_mw.time_to_first_token_ms``.
  Absent when the model was not called (an input bound answered).

No attribute carries message text, a prompt, a reply or a raw user id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import CallContext

__all__ = ["TRACING_ENV", "enabled", "instrument", "record_call", "uninstrument", "wanted"]

#: ``persona-mw serve`` instruments itself when this is ``1`` / ``true``.
TRACING_ENV = "PERSONA_MW_TRACING"
_INSTRUMENTATION = "persona_mw"
_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
}

_tracer: Any = None


def wanted() -> bool:
    """Whether the environment asks for traces (``PERSONA_MW_TRACING=1``)."""
    return os.environ.get(TRACING_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def enabled() -> bool:
    return _tracer is not None


def instrument(tracer_provider: Any = None) -> None:
    """Turn tracing on for this process: spans go to ``tracer_provider``, by default the global
    one (set by your OpenTelemetry SDK setup, or by ``opentelemetry-instrument``). Raises
    :class:`~persona_mw.errors.ConfigError` when the ``otel`` extra is not installed."""
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError:
        from .errors import ConfigError

        raise ConfigError(
            f"tracing needs OpenTelemetry: pip install 'persona-mw[otel]' (or unset {TRACING_ENV})",
            source="environment",
            field=TRACING_ENV,
        ) from None
    from . import __version__

    _tracer = trace.get_tracer(_INSTRUMENTATION, __version__, tracer_provider=tracer_provider)


def uninstrument() -> None:
    global _tracer
    _tracer = None


def record_call(ctx: CallContext) -> None:
    """The finished call's spans (see the module docstring); nothing while tracing is off."""
    if _tracer is None:
        return
    try:
        _record(_tracer, ctx)
    except Exception as exc:  # a tracing failure must not fail the call (finish never raises)
        from .observability import get_logger

        get_logger("persona_mw").warning(
            "tracing.failed", request_id=ctx.request_id, error=type(exc).__name__
        )


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _record(tracer: Any, ctx: CallContext) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    timings = ctx.timings_ms
    start = _ns(ctx.started_at) - int(timings.get("profile", 0.0) * 1e6)
    end = start + int(timings.get("total", 0.0) * 1e6)
    call = tracer.start_span("persona_mw.call", start_time=start, attributes=_call_attributes(ctx))
    if ctx.outcome == "error":
        call.set_status(Status(StatusCode.ERROR, ctx.error or None))
        call.set_attribute("error.type", str(ctx.error_status or "error"))
    parent = trace.set_span_in_context(call)
    for name, begin, ms, kind in _layout(ctx, start):
        if kind == "model":
            span = tracer.start_span(
                f"chat {ctx.model}",
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=begin,
                attributes=_model_attributes(ctx),
            )
        else:
            span = tracer.start_span(
                f"persona_mw.stage {name}",
                context=parent,
                start_time=begin,
                attributes={"persona_mw.stage": name},
            )
        span.end(end_time=begin + int(ms * 1e6))
    call.end(end_time=max(end, start))


def _layout(ctx: CallContext, start: int) -> Iterator[tuple[str, int, float, str]]:
    """(name, start ns, duration ms, kind) of each timed part, in the order the parts ran: one
    after another, except that a stream's output filters run while the model streams."""
    cursor, model_start = start, None
    for name, ms in ctx.timings_ms.items():
        if name in ("first_token", "total"):
            continue
        kind = "model" if name == "model" else "stage"
        if ctx.stream and name in ("model", "output"):
            if model_start is None:
                model_start = cursor
                cursor += int(ctx.timings_ms.get("model", 0.0) * 1e6)
            yield name, model_start, ms, kind
            continue
        yield name, cursor, ms, kind
        cursor += int(ms * 1e6)


def _call_attributes(ctx: CallContext) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "user.hash": ctx.user_hash,
        "persona_mw.request_id": ctx.request_id,
        "persona_mw.surface": ctx.surface,
        "persona_mw.outcome": ctx.outcome,
        "persona_mw.profile_source": ctx.profile_source,
        "persona_mw.stream": ctx.stream,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": ctx.model,
    }
    if ctx.decisions:
        attributes["persona_mw.bounds.rules"] = sorted({d.rule_id for d in ctx.decisions})
    actions = [a.kind for a in ctx.signals.actions] if ctx.signals else []
    if actions:
        attributes["persona_mw.signals.actions"] = actions
    return attributes


def _model_attributes(ctx: CallContext) -> dict[str, Any]:
    provider, _, _ = ctx.model.partition("/")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": ctx.model,
    }
    # 0 means unknown (a stream that reported no usage): left out rather than claimed
    if ctx.prompt_tokens:
        attributes["gen_ai.usage.input_tokens"] = ctx.prompt_tokens
    if ctx.completion_tokens:
        attributes["gen_ai.usage.output_tokens"] = ctx.completion_tokens
    if "/" in ctx.model:
        attributes["gen_ai.provider.name"] = provider
    if ctx.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [ctx.finish_reason]
    for param, key in _REQUEST_PARAMS.items():
        value = ctx.llm_kwargs.get(param)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[key] = value
    if "first_token" in ctx.timings_ms:
        attributes["persona_mw.time_to_first_token_ms"] = round(ctx.timings_ms["first_token"], 3)
    return attributes
