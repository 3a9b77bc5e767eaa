"""The response ladder: what fires, at which due time, and that it fires once per due time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta

import pytest

from persona_mw.profile import Limits
from persona_mw.signals import UsageEvent
from persona_mw.signals.compute import compute_signals
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.ladder import DisclosurePolicy, run_ladder

from .timelines import local, session

T0 = datetime(2025, 5, 3, 9, 0, tzinfo=UTC)


def replay(
    events: list[UsageEvent],
    *,
    config: SignalsConfig | None = None,
    limits: Limits | None = None,
    disclosure: DisclosurePolicy | None = None,
    minor: bool | None = None,
) -> dict[str, list[float]]:
    """Run the ladder at every user message, as the live stage does, carrying the due-state.
    Returns, per action, the minutes since the first message at which it was new."""
    fired: dict[str, list[float]] = {}
    state: Mapping[str, datetime] = {}
    start = min(e.ts for e in events)
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.role != "user":
            continue
        s = compute_signals(events, ev.ts, config, minor=minor)
        result = run_ladder(s, config=config, limits=limits, disclosure=disclosure, state=state)
        state = result.state
        for action in result.actions:
            if action.new:
                fired.setdefault(action.kind, []).append((ev.ts - start).total_seconds() / 60)
    return fired


def test_minor_long_session_statutory_reminder_on_schedule_and_not_twice() -> None:
    """A known minor chats every 10 minutes for 7 hours: the statutory reminder fires at 3 h and
    at 6 h, once each, though 36 requests fall after the first due time."""
    events = session("kid", T0, 420, every=10, minor=True)
    fired = replay(events)
    assert fired["statutory_reminder"] == [180, 360]
    assert fired["break_reminder"] == [60, 120, 180, 240, 300, 360, 420]
    assert fired["ai_disclosure"] == [0, 180, 360]


def test_minor_reminder_due_time_survives_sparse_requests() -> None:
    """Requests at 170 and 200 minutes: the 180-minute reminder fires at 200, not again at 230."""
    times = [0, 20, 40, 60, 80, 100, 120, 140, 160, 170, 200, 230]
    events = [UsageEvent("kid", T0 + timedelta(minutes=m), "user", minor=True) for m in times]
    assert replay(events)["statutory_reminder"] == [200]


def test_adult_gets_no_statutory_reminder() -> None:
    fired = replay(session("adult", T0, 420, every=10))
    assert "statutory_reminder" not in fired and "ai_disclosure" not in fired


def test_user_reminder_interval_is_used_and_tier_3() -> None:
    events = session("u", T0, 70, every=5)
    fired = replay(events, limits=Limits(reminder_interval_minutes=20))
    assert fired["break_reminder"] == [20, 40, 60]
    s = compute_signals(events, T0 + timedelta(minutes=20))
    action = run_ladder(s, limits=Limits(reminder_interval_minutes=20)).get("break_reminder")
    assert action is not None and action.tier == 3


@pytest.mark.parametrize(
    ("audience", "minor", "expected"),
    [("all", False, [0, 180, 360]), ("minors", False, None), ("minors", True, [0, 180, 360])],
)
def test_ai_disclosure_audience(audience: str, minor: bool, expected: list[float] | None) -> None:
    policy = DisclosurePolicy(audience, 180, "AI here")  # type: ignore[arg-type]
    fired = replay(session("u", T0, 400, every=10, minor=minor), disclosure=policy)
    assert fired.get("ai_disclosure") == expected


def test_ai_disclosure_once_a_day_across_sessions() -> None:
    tz = "Asia/Tokyo"
    events = (
        session("u", local(tz, 2025, 5, 3, 9, 0), 10, tz=tz)
        + session("u", local(tz, 2025, 5, 3, 15, 0), 10, tz=tz)
        + session("u", local(tz, 2025, 5, 4, 0, 5), 10, tz=tz)
    )
    fired = replay(events, config=SignalsConfig(ai_disclosure_audience="all"))
    assert fired["ai_disclosure"] == [0, 15 * 60 + 5]  # day 1 at 09:00, day 2 at 00:05 local


@pytest.mark.parametrize(
    ("limits", "config", "minor", "first_at", "tier"),
    [
        (Limits(daily_cap_minutes=30), SignalsConfig(), False, 30, 3),
        (Limits(), SignalsConfig(daily_cap_minutes=45), False, 45, 2),
        (Limits(), SignalsConfig(minor_daily_cap_minutes=60), True, 60, 2),
        (Limits(), SignalsConfig(minor_daily_cap_minutes=60), False, None, None),
        (Limits(daily_cap_minutes=50), SignalsConfig(daily_cap_minutes=40), False, 40, 2),
    ],
)
def test_daily_cap(
    limits: Limits, config: SignalsConfig, minor: bool, first_at: int | None, tier: int | None
) -> None:
    """Active minutes grow by 5 per 5-minute step; the tightest cap wins; the action is new once
    a day but holds on every later request."""
    events = session("u", T0, 90, every=5, reply_after_s=0.001)
    fired = replay(events, config=config, limits=limits, minor=minor)
    if first_at is None:
        assert "daily_cap_reached" not in fired
        return
    assert fired["daily_cap_reached"] == [first_at]
    s = compute_signals(events, T0 + timedelta(minutes=90), config, minor=minor)
    held = run_ladder(s, config=config, limits=limits, state={"daily_cap_reached": T0})
    cap = held.get("daily_cap_reached")
    assert cap is not None and not cap.new and cap.tier == tier


def test_quiet_hours_fire_once_per_night() -> None:
    tz = "Europe/London"
    events = session("u", local(tz, 2025, 5, 3, 21, 30), 120, every=15, tz=tz) + session(
        "u", local(tz, 2025, 5, 4, 22, 30), 30, every=15, tz=tz
    )
    limits = Limits(quiet_hours_start=time(22, 0), quiet_hours_end=time(7, 0))
    fired = replay(events, limits=limits)
    assert fired["quiet_hours"] == [30, 25 * 60]


def test_suggest_limits_weekly_and_never_to_a_user_with_a_cap() -> None:
    evs = [
        UsageEvent(
            "u",
            T0 + timedelta(days=d),
            "user",
            cues=frozenset({"fear_of_addiction"}),
            analysed=True,
        )
        for d in range(10)
    ]
    fired = replay(evs)
    assert fired["suggest_limits"] == [0, 7 * 24 * 60]
    assert fired["reduced_personalisation"] == [d * 24 * 60 for d in range(10)]
    assert "suggest_limits" not in replay(evs, limits=Limits(daily_cap_minutes=60))


def test_actions_carry_the_values_that_triggered_them() -> None:
    events = session("kid", T0, 185, every=5, minor=True)
    s = compute_signals(events, T0 + timedelta(minutes=185))
    result = run_ladder(s)
    reminder = result.get("statutory_reminder")
    assert reminder is not None and reminder.tier == 1
    assert reminder.signals == {"current_session_minutes": 185.0, "minor": True}
    assert result.state["statutory_reminder"] == s.now


def test_config_refuses_a_minor_interval_over_three_hours() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="less than or equal to 180"):
        SignalsConfig(minor_reminder_interval_minutes=240)
