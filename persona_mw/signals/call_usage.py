"""A call as usage events: what the usage recorder (:class:`~persona_mw.signals.UsageRecorder`)
writes for each request. Two events, the user's message (at ``ctx.started_at``) and the
assistant's reply (at completion), with counts and flags, never text: a message's text waits
beside its event, in memory only, when the user consented to text analysis and the recorder
has an analyser (it analyses in the background and drops the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from persona_mw.types import CallContext, UsageEvent

__all__ = ["PendingEvent", "call_events", "without_notices"]


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """One event waiting to be written, with what the log and the analysis need (in memory
    only): the user's hash, and the message text when the user consented to analysis."""

    event: UsageEvent
    user_hash: str
    text: str | None


def call_events(ctx: CallContext, *, analyse: bool) -> list[PendingEvent]:
    """The request's events: the user's message, and the reply unless none reached the user
    (a model error, or a cancellation before any text)."""
    profile = ctx.profile
    consent = profile.consent.text_analysis and analyse
    started = ctx.started_at if ctx.started_at.tzinfo else ctx.started_at.replace(tzinfo=UTC)
    user_text = ctx.user_text()
    # Each event made whole here: ``dataclasses.replace`` on a base event costs as much
    # again as making it.
    cues = ctx.user_cues if consent else None  # the dependence stage analysed it already
    user = UsageEvent(
        user_id=ctx.user_id,
        ts=started,
        role="user",
        tz=profile.timezone,
        minor=profile.known_minor,
        tokens=ctx.prompt_tokens,
        chars=len(user_text),
        cues=cues if cues is not None else frozenset(),
        request_id=ctx.request_id,
        analysed=consent,
    )
    out = [PendingEvent(user, ctx.user_hash, user_text if consent and cues is None else None)]
    replied = ctx.outcome != "error" and (ctx.outcome != "cancelled" or bool(ctx.output_text))
    if replied:
        reply_text = without_notices(ctx)
        reply = UsageEvent(
            user_id=ctx.user_id,
            ts=max(datetime.now(UTC), started),
            role="assistant",
            tz=profile.timezone,
            minor=profile.known_minor,
            tokens=ctx.completion_tokens,
            chars=len(reply_text),
            exposure=frozenset(ctx.exposure.parts),
            request_id=ctx.request_id,
            analysed=consent,
        )
        out.append(PendingEvent(reply, ctx.user_hash, reply_text if consent else None))
    return out


def without_notices(ctx: CallContext) -> str:
    """The model's reply without our own notices (an AI disclosure is not the assistant
    seeking a relationship, and is not its length either)."""
    text = ctx.output_text
    for notice in ctx.notices:
        text = text.replace(notice.text, "")
    return text.strip() if ctx.notices else text
