"""Signals from synthetic timelines: exact figures, user-local days, DST and far-east zones."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona_mw.signals import UsageEvent
from persona_mw.signals.compute import (
    UsageDigest,
    compute_signals,
    percentile_of,
    with_percentiles,
)
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.ladder import run_ladder

from .timelines import daily, local, session

# One 60-minute session, a message every 3 min answered after 20 s: 20 full 3-minute cycles,
# then the last message's 20 s to its reply and the 1-minute tail of the reply.
HOUR_ACTIVE = 60 + 1 / 3 + 1
HOUR_SESSION = 60 + 1 / 3


def test_active_minutes_definition() -> None:
    """Gaps count up to the 5-minute cap; the last message of a session earns the 1-minute tail;
    an idle gap over 30 minutes starts a new session."""
    t0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    evs = [
        UsageEvent("u", t0, "user"),
        UsageEvent("u", t0 + timedelta(minutes=2), "user"),  # 2 min credited to the first
        UsageEvent("u", t0 + timedelta(minutes=20), "user"),  # 18 min gap capped at 5
        UsageEvent("u", t0 + timedelta(minutes=51), "user"),  # 31 min: new session; tail 1
    ]
    s = compute_signals(evs, t0 + timedelta(minutes=52))
    assert s.daily_active_minutes == pytest.approx(2 + 5 + 1 + 1)
    assert s.sessions_today == 2
    assert s.current_session_minutes == 0.0  # the open session has one message
    assert s.session_started_at == t0 + timedelta(minutes=51)


def test_light_user_has_no_signals_or_actions() -> None:
    evs = session("light", datetime(2025, 1, 6, 14, 0, tzinfo=UTC), 6)
    now = datetime(2025, 1, 7, 12, 0, tzinfo=UTC)
    s = compute_signals(evs, now)
    assert (s.messages_today, s.sessions_today, s.daily_active_minutes) == (0, 0, 0.0)
    assert (s.current_session_minutes, s.session_started_at) == (0.0, None)
    assert (s.active_day_streak, s.days_active_28) == (1, 1)  # yesterday still counts
    assert s.late_night_share == 0.0
    result = run_ladder(s)
    assert result.kinds == [] and result.watch == {}


def test_heavy_late_night_user() -> None:
    """150 minutes from 00:30 Berlin time, 20 nights running."""
    tz = "Europe/Berlin"
    evs = daily("owl", local(tz, 2025, 1, 1, 0, 30), 20, 150, tz=tz)
    now = local(tz, 2025, 1, 20, 3, 0) + timedelta(seconds=30)
    s = compute_signals(evs, now)
    assert s.local_date == date(2025, 1, 20)
    assert s.late_night_share == 1.0
    assert s.late_night_window_messages == 14 * 51
    assert s.daily_active_minutes == pytest.approx(150 + 1 / 3 + 1)
    assert s.current_session_minutes == pytest.approx(150 + 1 / 3)
    assert (s.active_day_streak, s.days_active_28) == (20, 20)
    result = run_ladder(s)
    assert set(result.watch) == {"daily_active_minutes", "late_night_share", "active_day_streak"}
    assert result.kinds == ["log", "break_reminder", "reduced_personalisation", "suggest_limits"]


def test_thirty_day_streak() -> None:
    tz = "America/Los_Angeles"
    evs = daily("steady", local(tz, 2025, 2, 1, 18, 0), 30, 9, tz=tz)
    now = local(tz, 2025, 3, 2, 18, 10)
    s = compute_signals(evs, now)
    assert s.local_date == date(2025, 3, 2)
    assert s.active_day_streak == 30
    assert s.days_active_28 == 28
    assert s.messages_today == 4
    result = run_ladder(s)
    # streak and days-active are one habit: a single watch group, so only the log rung.
    assert set(result.watch) == {"active_day_streak", "days_active_28"}
    assert result.kinds == ["log"]


def test_streak_breaks_on_a_missed_local_day() -> None:
    evs = daily("u", datetime(2025, 2, 1, 12, tzinfo=UTC), 5, 3) + daily(
        "u", datetime(2025, 2, 7, 12, tzinfo=UTC), 3, 3
    )
    s = compute_signals(evs, datetime(2025, 2, 9, 13, tzinfo=UTC))
    assert s.active_day_streak == 3


@pytest.mark.parametrize(
    ("name", "tz", "start", "now_utc", "local_day", "minutes", "late_share", "session"),
    [
        # Spring forward: 01:30 EST to 03:30 EDT is one real hour, all of it late night.
        (
            "ny-spring",
            "America/New_York",
            (2025, 3, 9, 1, 30),
            datetime(2025, 3, 9, 7, 31, tzinfo=UTC),
            date(2025, 3, 9),
            HOUR_ACTIVE,
            1.0,
            HOUR_SESSION,
        ),
        # Fall back: 01:30 EDT to 01:30 EST is one real hour (wall clock says 0): counted once.
        (
            "ny-fall",
            "America/New_York",
            (2025, 11, 2, 1, 30),
            datetime(2025, 11, 2, 6, 31, tzinfo=UTC),
            date(2025, 11, 2),
            HOUR_ACTIVE,
            1.0,
            HOUR_SESSION,
        ),
        # Auckland (UTC+13 in March): 00:30 local on the 10th is still the 9th in UTC.
        (
            "auckland",
            "Pacific/Auckland",
            (2025, 3, 10, 0, 30),
            datetime(2025, 3, 9, 12, 31, tzinfo=UTC),
            date(2025, 3, 10),
            HOUR_ACTIVE,
            1.0,
            HOUR_SESSION,
        ),
        # Auckland daytime: 13:00 local is 00:00 UTC, which a UTC clock would call late night.
        (
            "auckland-day",
            "Pacific/Auckland",
            (2025, 3, 10, 13, 0),
            datetime(2025, 3, 10, 1, 1, tzinfo=UTC),
            date(2025, 3, 10),
            HOUR_ACTIVE,
            0.0,
            HOUR_SESSION,
        ),
    ],
)
def test_time_zone_and_dst_edges(
    name: str,
    tz: str,
    start: tuple[int, ...],
    now_utc: datetime,
    local_day: date,
    minutes: float,
    late_share: float,
    session: float,
) -> None:
    evs = session_events = globals()["session"]("u", local(tz, *start), 60, tz=tz)
    assert session_events
    s = compute_signals(evs, now_utc)
    assert s.local_date == local_day, name
    assert s.daily_active_minutes == pytest.approx(minutes), name
    assert s.late_night_share == late_share, name
    assert s.current_session_minutes == pytest.approx(session), name
    assert s.messages_today == 21


def test_session_across_local_midnight_counts_on_both_days() -> None:
    tz = "Pacific/Auckland"
    evs = session("u", local(tz, 2025, 6, 1, 23, 45), 30, tz=tz)  # 23:45 to 00:15
    s = compute_signals(evs, local(tz, 2025, 6, 2, 0, 16))
    yesterday, today = s.history[-2], s.history[-1]
    assert (yesterday.messages, today.messages) == (5, 6)
    assert (yesterday.sessions, today.sessions) == (1, 1)
    assert s.sessions_today == 1
    assert yesterday.active_minutes == pytest.approx(15)
    assert today.active_minutes == pytest.approx(15 + 1 / 3 + 1)


def test_events_after_now_are_ignored() -> None:
    t0 = datetime(2025, 1, 6, 9, tzinfo=UTC)
    evs = session("u", t0, 60)
    s = compute_signals(evs, t0 + timedelta(minutes=30, seconds=30))
    assert s.messages_today == 11
    assert s.current_session_minutes == pytest.approx(30 + 1 / 3)


@pytest.mark.parametrize(
    ("per_day", "sign"),
    [
        (lambda d: 10 + 5 * d, 1),  # growing use
        (lambda d: 150 - 5 * d, -1),  # tapering off
        (lambda d: 30, 0),  # steady
    ],
)
def test_usage_trend_sign(per_day: object, sign: int) -> None:
    evs = []
    for d in range(28):
        minutes = per_day(d)  # type: ignore[operator]
        evs += session("u", datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(days=d), minutes)
    s = compute_signals(evs, datetime(2025, 1, 28, 23, tzinfo=UTC))
    assert s.usage_trend * sign > 0.02 if sign else abs(s.usage_trend) < 1e-9


def test_trend_needs_a_week_of_history() -> None:
    evs = []
    for d in range(4):
        evs += session("u", datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(days=d), 10 + 30 * d)
    assert compute_signals(evs, datetime(2025, 1, 4, 23, tzinfo=UTC)).usage_trend == 0.0


def test_cue_rates_relationship_and_exposure() -> None:
    t0 = datetime(2025, 1, 6, 9, tzinfo=UTC)
    evs = [
        UsageEvent("u", t0, "user", cues=frozenset({"dependence"}), analysed=True),
        UsageEvent(
            "u",
            t0 + timedelta(minutes=1),
            "assistant",
            relationship_score=0.8,
            exposure=frozenset({"style"}),
        ),
        UsageEvent(
            "u",
            t0 + timedelta(minutes=2),
            "user",
            cues=frozenset({"dependence", "fear_of_addiction"}),
            analysed=True,
        ),
        UsageEvent("u", t0 + timedelta(minutes=3), "assistant", relationship_score=0.1),
        UsageEvent("u", t0 + timedelta(minutes=4), "user", analysed=True),
        UsageEvent("u", t0 + timedelta(minutes=5), "user"),  # no consent: not in the rates
    ]
    s = compute_signals(evs, t0 + timedelta(minutes=6))
    assert s.analysed_messages == 3
    assert s.cue_rates["dependence"] == pytest.approx(2 / 3)
    assert s.cue_rates["fear_of_addiction"] == pytest.approx(1 / 3)
    assert s.cue_rates["anthropomorphism"] == 0.0
    assert s.fear_of_addiction is True
    assert s.relationship_seeking_rate == 0.5
    assert s.personalisation_exposure == 0.5


def test_percentiles_across_users() -> None:
    now = datetime(2025, 1, 28, 23, tzinfo=UTC)
    users = {
        name: compute_signals(session(name, datetime(2025, 1, 28, 12, tzinfo=UTC), minutes), now)
        for name, minutes in (("a", 3), ("b", 30), ("c", 60), ("d", 90))
    }
    ranked = {s.user_id: s.percentile for s in with_percentiles(list(users.values()))}
    assert ranked == {"a": 0.125, "b": 0.375, "c": 0.625, "d": 0.875}
    assert percentile_of(5.0, []) == 0.0


def test_config_changes_the_session_gap() -> None:
    t0 = datetime(2025, 1, 6, 9, tzinfo=UTC)
    evs = [UsageEvent("u", t0, "user"), UsageEvent("u", t0 + timedelta(minutes=20), "user")]
    now = t0 + timedelta(minutes=21)
    assert compute_signals(evs, now).sessions_today == 1
    assert compute_signals(evs, now, SignalsConfig(session_idle_gap_minutes=15)).sessions_today == 2


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_signals([], datetime(2025, 1, 1))


def test_zone_aware_timestamps_are_compared_in_real_time() -> None:
    """Two events carrying the same ZoneInfo across fall-back: 01:50 EDT then 01:10 EST are 20
    real minutes apart (wall clock says -40), so they are one session."""
    tz = "America/New_York"
    first = local(tz, 2025, 11, 2, 1, 50)
    second = local(tz, 2025, 11, 2, 1, 10).replace(fold=1)
    evs = [UsageEvent("u", first, "user", tz=tz), UsageEvent("u", second, "user", tz=tz)]
    s = compute_signals(evs, second.astimezone(UTC) + timedelta(minutes=1))
    assert s.sessions_today == 1
    assert s.current_session_minutes == pytest.approx(20)


# -- the incremental digest ---------------------------------------------------------------------

_ZONES = ("UTC", "Europe/Berlin", "Pacific/Kiritimati", "America/Los_Angeles")


@st.composite
def _timelines(draw: st.DrawFn) -> list[UsageEvent]:
    """Up to 60 events over ~40 days: gaps from seconds to days, both roles, mixed zones, cues."""
    t = datetime(2025, 3, 1, tzinfo=UTC)
    events = []
    for i in range(draw(st.integers(0, 60))):
        t += timedelta(seconds=draw(st.sampled_from([0, 20, 170, 400, 2000, 40_000, 200_000])))
        role = draw(st.sampled_from(["user", "assistant"]))
        score = draw(st.none() | st.floats(0, 1)) if role == "assistant" else None
        events.append(
            UsageEvent(
                "u",
                t,
                role,
                tz=draw(st.sampled_from(_ZONES)),
                cues=frozenset(draw(st.sets(st.sampled_from(["dependence", "support_seeking"])))),
                analysed=draw(st.booleans()),
                relationship_score=score,
                exposure=frozenset({"style"}) if draw(st.booleans()) else frozenset(),
                request_id=f"r{i}",
            )
        )
    # Time order, the user's message first at one instant: the order a digest accepts.
    return sorted(events, key=lambda e: (e.ts, e.role != "user"))


@settings(max_examples=150, deadline=None)
@given(_timelines(), st.data())
def test_digest_read_after_each_event_equals_a_full_recompute(
    events: list[UsageEvent], data: st.DataObject
) -> None:
    """Reading signals must not disturb the digest, and the last event's open credit must settle
    exactly as a full recompute counts it."""
    digest = UsageDigest()
    for i, event in enumerate(events):
        assert digest.add(event)
        now = event.ts + timedelta(seconds=data.draw(st.sampled_from([0, 90, 3000])))
        assert digest.signals(now) == compute_signals(events[: i + 1], now)
    assert digest.count == len(events)


@settings(max_examples=100, deadline=None)
@given(_timelines(), st.randoms(use_true_random=False))
def test_digest_refuses_an_event_out_of_order_and_stays_unchanged(
    events: list[UsageEvent], rnd: object
) -> None:
    if len(events) < 2 or events[0].ts == events[-1].ts:
        return
    digest = UsageDigest.of(events[1:])
    now = events[-1].ts
    before = digest.signals(now)
    assert not digest.add(replace(events[0], ts=events[0].ts - timedelta(seconds=1)))
    assert digest.signals(now) == before


@settings(max_examples=100, deadline=None)
@given(_timelines(), st.data())
def test_a_late_event_counts_like_a_full_recompute_but_for_minutes(
    events: list[UsageEvent], data: st.DataObject
) -> None:
    """add(late=True) of an event that sorts before the last: every count matches a full
    recompute (active minutes and session counts are approximate until the next reload)."""
    if len(events) < 2:
        return
    i = data.draw(st.integers(0, len(events) - 2))
    if _order_key(events[i]) == _order_key(events[-1]):
        return
    digest = UsageDigest.of(events[:i] + events[i + 1 :])
    assert digest.add(events[i], late=True)
    now = events[-1].ts + timedelta(seconds=30)
    got, want = (
        digest.signals(now).to_dict(history=True),
        compute_signals(events, now).to_dict(history=True),
    )
    for key in ("messages_today", "late_night_share", "cue_rates", "assistant_messages_scored"):
        assert got[key] == want[key], key
    for mine, full in zip(got["history"], want["history"], strict=True):
        assert (mine["messages"], mine["cues"]) == (full["messages"], full["cues"])
        assert mine["late_night_messages"] == full["late_night_messages"]


def _order_key(event: UsageEvent) -> tuple[datetime, bool]:
    return event.ts, event.role != "user"


def test_digest_of_any_order_equals_compute_signals() -> None:
    evs = daily("owl", local("Europe/Berlin", 2025, 1, 1, 0, 30), 20, 150, tz="Europe/Berlin")
    now = evs[-1].ts + timedelta(minutes=10)
    assert UsageDigest.of(reversed(evs)).signals(now) == compute_signals(evs, now)


def test_digest_refuses_a_time_before_its_last_event() -> None:
    t0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    digest = UsageDigest.of([UsageEvent("u", t0, "user")])
    with pytest.raises(ValueError, match="before the digest's last event"):
        digest.signals(t0 - timedelta(seconds=1))
