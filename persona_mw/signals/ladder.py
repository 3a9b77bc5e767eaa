"""The response ladder: signals + limits + policy + when each action last fired → actions due now.

A pure function (:func:`run_ladder`); the caller keeps the due-state (the last time each action
fired) and passes it back next time, which is how an action fires once per due time rather than on
every request. Rungs, gentlest first::

    log → break_reminder → reduced_personalisation → suggest_limits → statutory
                                                      (statutory_reminder for known minors,
                                                       ai_disclosure, daily_cap_reached)

Two kinds of action: *notices* (log, break_reminder, statutory_reminder, ai_disclosure,
suggest_limits, quiet_hours) are listed only when they are due and have not yet fired for that due
time; *states* (reduced_personalisation, daily_cap_reached) are listed on every request while
they hold, and are ``new`` (to be logged) once per local day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal, get_args

from persona_mw.profile import Limits
from persona_mw.types import ActionKind, DueAction, LadderResult, SignalValue

from .compute import Signals, _local
from .config import SignalsConfig

__all__ = [
    "ACTION_KINDS",
    "STATE_KINDS",
    "DisclosurePolicy",
    "ReminderPolicy",
    "run_ladder",
    "watch_signals",
]

ACTION_KINDS: tuple[ActionKind, ...] = get_args(ActionKind)
#: The kinds that are states (listed while they hold), not notices (listed once when due).
STATE_KINDS: frozenset[ActionKind] = frozenset({"reduced_personalisation", "daily_cap_reached"})

#: Watch signals that measure the same habit count once when deciding how far up the ladder to go.
_GROUP = {"active_day_streak": "habit", "days_active_28": "habit"}


@dataclass(frozen=True, slots=True)
class DisclosurePolicy:
    """Who is told "you are talking to an AI", when, and with which words: at the start (the
    day's first interaction, ``"daily"``; only the very first, ``"first"``; or ``"none"``) and
    every ``interval_minutes`` of continuing interaction (None: never again that day)."""

    audience: Literal["all", "minors"]
    interval_minutes: float | None
    text: str
    at_start: Literal["daily", "first", "none"] = "daily"
    #: The laws that require the notice at the start / at the interval (jurisdiction codes).
    start_laws: tuple[str, ...] = ()
    interval_laws: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReminderPolicy:
    """The statutory break + not-human reminder, every ``interval_minutes`` of a session, for
    the user it is given for (the laws' audience already applied), and the laws behind it."""

    interval_minutes: float
    laws: tuple[str, ...] = ()


def watch_signals(signals: Signals, config: SignalsConfig) -> dict[str, SignalValue]:
    """The signals over their (heuristic) watch thresholds, with their values."""
    s, c = signals, config
    out: dict[str, SignalValue] = {}
    if s.daily_active_minutes >= c.watch_daily_minutes:
        out["daily_active_minutes"] = round(s.daily_active_minutes, 2)
    if (
        s.late_night_window_messages >= c.min_late_night_messages
        and s.late_night_share >= c.watch_late_night_share
    ):
        out["late_night_share"] = round(s.late_night_share, 4)
    if s.active_day_streak >= c.watch_streak_days:
        out["active_day_streak"] = s.active_day_streak
    if s.days_active_28 >= c.watch_days_active_28:
        out["days_active_28"] = s.days_active_28
    if s.usage_trend >= c.watch_usage_trend:
        out["usage_trend"] = round(s.usage_trend, 4)
    if s.percentile is not None and s.percentile >= c.watch_percentile:
        out["percentile"] = round(s.percentile, 4)
    if s.analysed_messages >= c.min_analysed_messages:
        for cue, threshold in (
            ("dependence", c.watch_dependence_rate),
            ("anthropomorphism", c.watch_anthropomorphism_rate),
            ("support_seeking", c.watch_support_seeking_rate),
        ):
            rate = s.cue_rates.get(cue, 0.0)
            if rate >= threshold:
                out[f"{cue}_rate"] = round(rate, 4)
    if s.fear_of_addiction:
        out["fear_of_addiction"] = True
    if (
        s.assistant_messages_scored >= c.min_analysed_messages
        and s.relationship_seeking_rate >= c.watch_relationship_seeking_rate
    ):
        out["relationship_seeking_rate"] = round(s.relationship_seeking_rate, 4)
    return out


def run_ladder(
    signals: Signals,
    *,
    config: SignalsConfig | None = None,
    limits: Limits | None = None,
    disclosure: DisclosurePolicy | None = None,
    reminder: ReminderPolicy | None = None,
    state: Mapping[str, datetime] | None = None,
) -> LadderResult:
    """The actions due at ``signals.now`` and the due-state to keep. Pure: no I/O, no clock.

    ``reminder``: the laws' break + not-human reminder for this user; without it, known minors
    get one every ``config.minor_reminder_interval_minutes``."""
    cfg = config or SignalsConfig()
    lim = limits or Limits()
    last = dict(state or {})
    now = signals.now
    today = signals.local_date
    new_state = dict(last)
    actions: list[DueAction] = []

    def fire(
        kind: ActionKind,
        tier: int,
        reason: str,
        values: Mapping[str, SignalValue],
        laws: tuple[str, ...] = (),
    ) -> None:
        actions.append(DueAction(kind, tier, True, reason, dict(values), laws))
        new_state[kind] = now

    def same_day(ts: datetime | None) -> bool:
        return ts is not None and _local(ts, signals.tz).date() == today

    def hold(kind: ActionKind, tier: int, reason: str, values: Mapping[str, SignalValue]) -> None:
        """A state: listed every time; new (and logged) once per local day."""
        new = not same_day(last.get(kind))
        actions.append(DueAction(kind, tier, new, reason, dict(values)))
        if new:
            new_state[kind] = now

    watch = watch_signals(signals, cfg)
    level = len({_GROUP.get(name, name) for name in watch})
    start = signals.session_started_at
    session = {"current_session_minutes": round(signals.current_session_minutes, 2)}

    if watch and not same_day(last.get("log")):
        fire("log", 2, "signals over their watch thresholds", watch)

    if start is not None:
        user_interval = lim.reminder_interval_minutes
        first = timedelta(minutes=user_interval or cfg.break_after_minutes)
        every = timedelta(minutes=user_interval or cfg.break_interval_minutes)
        previous = last.get("break_reminder")
        due = previous + every if previous is not None and previous >= start else start + first
        if now >= due:
            fire(
                "break_reminder",
                3 if user_interval else 2,
                "the user's reminder interval" if user_interval else "long continuous session",
                session,
            )

        statutory = reminder
        if statutory is None and signals.minor:
            statutory = ReminderPolicy(cfg.minor_reminder_interval_minutes)
        if statutory is not None:
            step = timedelta(minutes=statutory.interval_minutes)
            k = int((now - start) / step)
            previous = last.get("statutory_reminder")
            if k >= 1 and (previous is None or previous < start + k * step):
                why = ", ".join(statutory.laws) or "CA SB 243 for known minors"
                fire(
                    "statutory_reminder",
                    1,
                    f"break and not-human reminder every {statutory.interval_minutes:g} "
                    f"minutes ({why})",
                    {**session, "minor": signals.minor},
                    statutory.laws,
                )

    policy = disclosure or DisclosurePolicy(
        cfg.ai_disclosure_audience, cfg.ai_disclosure_interval_minutes, cfg.ai_disclosure_text
    )
    if policy.audience == "all" or signals.minor:
        previous = last.get("ai_disclosure")
        at_start = (policy.at_start == "daily" and not same_day(previous)) or (
            policy.at_start == "first" and previous is None
        )
        interval = policy.interval_minutes
        continuing = (
            interval is not None
            and start is not None
            and now - max(previous or start, start) >= timedelta(minutes=interval)
        )
        if at_start or continuing:
            fire(
                "ai_disclosure",
                1,
                (
                    "first interaction of the day"
                    if policy.at_start == "daily"
                    else "first interaction"
                )
                if at_start
                else "continuing interaction",
                {**session, "minor": signals.minor, "audience": policy.audience},
                policy.start_laws if at_start else policy.interval_laws,
            )

    if level >= cfg.reduce_at_watch_count or signals.fear_of_addiction:
        hold("reduced_personalisation", 2, f"{level} watch signal(s)", watch)

    if (level >= cfg.suggest_at_watch_count or signals.fear_of_addiction) and (
        lim.daily_cap_minutes is None
    ):
        previous = last.get("suggest_limits")
        if previous is None or now - previous >= timedelta(days=cfg.suggest_limits_every_days):
            fire("suggest_limits", 2, f"{level} watch signal(s)", watch)

    caps: list[tuple[float, int, str]] = []
    if lim.daily_cap_minutes is not None:
        caps.append((float(lim.daily_cap_minutes), 3, "the user's daily cap"))
    if cfg.daily_cap_minutes is not None:
        caps.append((cfg.daily_cap_minutes, 2, "the deployer's daily cap"))
    if signals.minor and cfg.minor_daily_cap_minutes is not None:
        caps.append((cfg.minor_daily_cap_minutes, 2, "the deployer's daily cap for minors"))
    if caps:
        cap, tier, why = min(caps)
        if signals.daily_active_minutes >= cap:
            hold(
                "daily_cap_reached",
                tier,
                why,
                {
                    "daily_active_minutes": round(signals.daily_active_minutes, 2),
                    "cap_minutes": cap,
                },
            )

    if lim.quiet_hours_start is not None and lim.quiet_hours_end is not None:
        began = _quiet_period_start(
            _local(now, signals.tz), lim.quiet_hours_start, lim.quiet_hours_end
        )
        previous = last.get("quiet_hours")
        if began is not None and (previous is None or previous < began):
            fire(
                "quiet_hours",
                3,
                "the user's quiet hours",
                {"local_time": _local(now, signals.tz).strftime("%H:%M")},
            )

    return LadderResult(actions=tuple(actions), state=new_state, watch=watch)


def _quiet_period_start(local_now: datetime, begin: time, end: time) -> datetime | None:
    """When the quiet period containing ``local_now`` began, or None outside quiet hours."""
    t = local_now.timetz().replace(tzinfo=None)
    today_start = local_now.replace(hour=begin.hour, minute=begin.minute, second=0, microsecond=0)
    if begin <= end:
        return today_start if begin <= t < end else None
    if t >= begin:
        return today_start
    if t < end:
        return today_start - timedelta(days=1)
    return None
