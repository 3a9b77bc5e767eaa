"""A digest keeps the window's past days summed between reads (the live stage adds one message
and reads the signals on every call): whatever was added, in whatever order, and whenever it is
read, what it answers equals what a fresh digest given the same events answers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from persona_mw.signals import UsageEvent
from persona_mw.signals.compute import UsageDigest, compute_signals
from tests.signals.test_rollup import CONFIG, ZONES, timelines


def replayed(adds: list[UsageEvent]) -> UsageDigest:
    """A digest that never answered before: the same events added the same way."""
    digest = UsageDigest(CONFIG)
    for event in adds:
        digest.add(event, late=True)
    return digest


@settings(max_examples=150, deadline=None)
@given(events=timelines(max_events=40), data=st.data())
def test_a_digest_that_kept_its_sums_answers_like_a_fresh_one(
    events: list[UsageEvent], data: st.DataObject
) -> None:
    """Reads between the adds, at times moving on by seconds to days (so "today" moves, and the
    last message's open credit moves from one day to the next), in the zone of the events or
    another; some events arrive after a later one (added late, as the stage does)."""
    arrival = list(events)
    for i in range(len(arrival) - 1):
        if data.draw(st.integers(0, 4)) == 0:  # this one arrives after the next one
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
    kept = UsageDigest(CONFIG)
    adds: list[UsageEvent] = []
    now = arrival[0].ts
    reads = 0
    for event in arrival:
        kept.add(event, late=True)
        adds.append(event)
        for _ in range(data.draw(st.integers(0, 2))):
            last = kept.last_ts
            assert last is not None
            now = max(now, last) + timedelta(
                seconds=data.draw(st.sampled_from((0, 30, 1800, 20 * 3600, 3 * 86400)))
            )
            tz = data.draw(st.none() | st.sampled_from(ZONES))
            history = data.draw(st.booleans())
            got = kept.signals(now, tz=tz, history=history)
            fresh = replayed(adds).signals(now, tz=tz, history=True)
            assert got == (fresh if history else replace(fresh, history=()))
            reads += 1
    # in time order, the live digest also equals the signals of the raw events (read no earlier
    # than the last event: the last adds may have come with no read after them)
    if arrival == events and reads:
        last = kept.last_ts
        assert last is not None
        now = max(now, last)
        assert kept.signals(now) == compute_signals(events, now, CONFIG)


def test_the_kept_sums_follow_a_message_that_settles_yesterday() -> None:
    """A message just after midnight settles the active time of the one just before it, which
    counts on yesterday: yesterday's minutes change although only today's message was added."""
    midnight = datetime(2025, 6, 2, tzinfo=UTC)
    first = UsageEvent("ada", midnight - timedelta(minutes=2), "user", tz="UTC")
    second = UsageEvent("ada", midnight + timedelta(minutes=2), "user", tz="UTC")
    digest = UsageDigest(CONFIG)
    digest.add(first)
    before = digest.signals(second.ts)  # yesterday summed (and kept) with its open credit
    digest.add(second)
    after = digest.signals(second.ts)
    assert before.history[-2].active_minutes == CONFIG.session_tail_minutes == 1.0
    assert after.history[-2].active_minutes == 4.0  # 23:58 -> 00:02, below the 5 min cap
    assert after.mean_daily_minutes_28 == (4.0 + 1.0) / CONFIG.window_days
    assert after == replayed([first, second]).signals(second.ts)
