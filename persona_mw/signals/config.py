"""Thresholds of the dependence signals and the response ladder: tier-2 policy, validated.

Only a few figures come from law or industry (marked **law** / **industry** below and in
docs/signals.md); every other default is our own heuristic, chosen to be conservative and meant to
be tuned by the deployer. The statutory figures are bounds the deployer may tighten but never
loosen: a minor's reminder interval may not exceed 3 hours (California SB 243), and the
AI-disclosure interval may not exceed 3 hours (New York GBL Art. 47).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from persona_mw.validation import validate_config

__all__ = ["STATUTORY_INTERVAL_MINUTES", "SignalsConfig", "load_signals_config"]

#: "At least every 3 hours of continuing interaction" (CA SB 243 for known minors; NY GBL §1702
#: for all users of an AI companion).
STATUTORY_INTERVAL_MINUTES = 180


class SignalsConfig(BaseModel):
    """Every threshold of the signals and the ladder. Immutable; unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- how the signals are measured (heuristics unless marked) ---------------------------------
    #: A session ends after this many idle minutes (industry convention; the issue's default).
    session_idle_gap_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    #: Active minutes: each message is credited the time to the next message of its session,
    #: capped at this many minutes (heuristic: longer pauses are reading or away).
    active_gap_cap_minutes: float = Field(default=5.0, gt=0, le=60)
    #: Active minutes credited to the last message of a session (heuristic: reading the reply).
    session_tail_minutes: float = Field(default=1.0, ge=0, le=30)
    #: Late night is [start, end) local hours (heuristic, after sleep research conventions).
    late_night_start_hour: int = Field(default=0, ge=0, le=23)
    late_night_end_hour: int = Field(default=5, ge=1, le=24)
    #: Window of the late-night share, in local days (the issue's figure).
    late_night_window_days: int = Field(default=14, ge=1, le=90)
    #: Window of days-active, the usage trend, cue rates and exposure (the issue's figure).
    window_days: int = Field(default=28, ge=7, le=90)
    #: How far back events are loaded; bounds the longest streak we can see.
    history_days: int = Field(default=60, ge=28, le=400)
    #: A trend needs this many local days since the first event; before that it is 0.0.
    trend_min_days: int = Field(default=7, ge=3, le=28)
    #: An assistant message scoring at least this counts as relationship-seeking (0-1 scale).
    relationship_score_threshold: float = Field(default=0.5, ge=0, le=1)
    #: Cue rates need this many analysed user messages in the window before they can trigger.
    min_analysed_messages: int = Field(default=5, ge=1)
    #: The late-night share needs this many user messages in its window before it can trigger.
    min_late_night_messages: int = Field(default=10, ge=1)

    # -- the "watch" thresholds: crossing one is logged; several raise the ladder (heuristics) ---
    watch_daily_minutes: float = Field(default=120.0, gt=0)
    watch_late_night_share: float = Field(default=0.25, gt=0, le=1)
    watch_streak_days: int = Field(default=14, ge=2)
    watch_days_active_28: int = Field(default=24, ge=1, le=28)
    watch_usage_trend: float = Field(default=0.25, gt=0)
    watch_percentile: float = Field(default=0.95, gt=0, le=1)
    watch_dependence_rate: float = Field(default=0.10, gt=0, le=1)
    watch_anthropomorphism_rate: float = Field(default=0.10, gt=0, le=1)
    watch_support_seeking_rate: float = Field(default=0.20, gt=0, le=1)
    watch_relationship_seeking_rate: float = Field(default=0.30, gt=0, le=1)

    # -- the ladder ------------------------------------------------------------------------------
    #: First break reminder after this many minutes of continuous session (industry:
    #: Character.AI's notice after an hour; OpenAI's break reminders during long sessions).
    break_after_minutes: float = Field(default=60.0, gt=0)
    #: Then again every this many minutes, unless the user set their own reminder interval.
    break_interval_minutes: float = Field(default=60.0, gt=0)
    #: Reduced personalisation (no pet names, no memory call-backs) from this many watch signals
    #: on (heuristic); fear of addiction alone also reduces it.
    reduce_at_watch_count: int = Field(default=2, ge=1)
    #: Offer self-set limits from this many watch signals on (heuristic), at most once per
    #: ``suggest_limits_every_days``; never to a user who already set a daily cap.
    suggest_at_watch_count: int = Field(default=3, ge=1)
    suggest_limits_every_days: int = Field(default=7, ge=1)
    #: Statutory break + not-human reminder for known minors (law: CA SB 243, at least every 3 h).
    minor_reminder_interval_minutes: float = Field(
        default=STATUTORY_INTERVAL_MINUTES, gt=0, le=STATUTORY_INTERVAL_MINUTES
    )
    #: Deployer daily cap in active minutes for everyone / for known minors; None: no cap
    #: (industry: Character.AI's teen limit, 2 h then 1 h a day — set 60 to follow it).
    daily_cap_minutes: float | None = Field(default=None, gt=0)
    minor_daily_cap_minutes: float | None = Field(default=None, gt=0)
    #: Who gets the AI disclosure: known minors only (law: CA SB 243) or everyone (law: NY GBL
    #: Art. 47 for AI companions; EU AI Act Art. 50). At the start of the day's first interaction
    #: and at least every ``ai_disclosure_interval_minutes`` of continuing interaction.
    ai_disclosure_audience: Literal["all", "minors"] = "minors"
    ai_disclosure_interval_minutes: float = Field(
        default=STATUTORY_INTERVAL_MINUTES, gt=0, le=STATUTORY_INTERVAL_MINUTES
    )

    # -- texts shown to the user (the deployer may replace them) ---------------------------------
    break_reminder_text: str = (
        "You have been chatting for a while. This might be a good moment to take a break."
    )
    minor_reminder_text: str = (
        "Reminder: you are talking to an AI, not a person. You have been chatting for a long "
        "time; please take a break."
    )
    ai_disclosure_text: str = "You are talking to an AI system, not a human."
    suggest_limits_text: str = (
        "You can set your own daily time limit, quiet hours or reminder interval in your "
        "profile settings."
    )
    quiet_hours_text: str = "You asked for quiet hours at this time of day. Consider a pause."
    daily_cap_text: str = (
        "You have reached today's time limit for this assistant. It will be available again "
        "tomorrow."
    )

    # -- the stage -------------------------------------------------------------------------------
    #: Seconds the stage keeps a user's loaded events (0 disables; one round trip per request).
    events_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)

    @model_validator(mode="after")
    def _late_night_order(self) -> SignalsConfig:
        if self.late_night_end_hour <= self.late_night_start_hour:
            raise ValueError(
                "late_night_end_hour must be after late_night_start_hour (e.g. 0 and 5)"
            )
        if self.suggest_at_watch_count < self.reduce_at_watch_count:
            raise ValueError(
                "suggest_at_watch_count must be >= reduce_at_watch_count: the ladder offers "
                "limits only after it has reduced personalisation"
            )
        return self


def load_signals_config(data: Mapping[str, Any], *, source: str = "config") -> SignalsConfig:
    """The ``signals:`` section of a deployment config as a :class:`SignalsConfig`; a bad value
    raises :class:`ConfigError` naming ``signals.<field>`` and what is allowed."""
    return validate_config(SignalsConfig, dict(data), source=source, prefix="signals")
