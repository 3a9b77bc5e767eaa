"""The disclosure and reminder schedule from the laws, over synthetic timelines, through the real
bounds stage (which laws apply) and the real dependence stage (its ladder and due-state).

A user writes every 10 minutes for 6 hours from local noon (one continuous session); the table
says at which minutes each statutory notice fires and which laws asked for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from persona_mw.bounds import BoundsInputStage, policy_from_dict
from persona_mw.profile import Profile
from persona_mw.signals.action_state import MemoryActionStateStore
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.metrics import SignalsMetrics
from persona_mw.signals.stage import DependenceStage
from persona_mw.signals.usage_store import MemoryUsageStore
from persona_mw.types import CallContext

CA, NY, WA, OR, EU = (
    "us-ca-sb243",
    "us-ny-gbl-art47",
    "us-wa-hb2225",
    "us-or-sb1546",
    "eu-ai-act-art50",
)
#: No ai-disclosure pack: the schedule comes from the laws (and the config's default for minors).
POLICY = policy_from_dict({"version": "schedule-1", "packs": ["crisis", "minor-safety"]})
START = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
HOURLY = [60, 120, 180, 240, 300, 360]


async def timeline(
    profile: Profile,
    minutes: list[int],
    *,
    policy: Any = POLICY,
    misleading: bool = False,
) -> dict[str, list[tuple[int, tuple[str, ...]]]]:
    """Run the user's messages at ``minutes`` after START; per action kind, when it fired
    (minutes) and the laws it named."""
    bounds = BoundsInputStage(policy=policy, misleading_context=misleading)
    dependence = DependenceStage(
        MemoryUsageStore(retention_days=None),
        config=SignalsConfig(events_cache_ttl_s=300),
        state_store=MemoryActionStateStore(),
        metrics=SignalsMetrics(CollectorRegistry()),
    )
    fired: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for i, minute in enumerate(minutes):
        messages = [{"role": "user", "content": "hello"}]
        ctx = CallContext(
            request_id=f"r{i}",
            user_id=profile.user_id,
            user_hash="h",
            model="m",
            messages=messages,
            prompt_messages=list(messages),
            stream=False,
            llm_kwargs={},
            profile=profile,
            profile_source="store",
            started_at=START + timedelta(minutes=minute),
        )
        await bounds(ctx)
        await dependence(ctx)
        assert ctx.signals is not None
        for action in ctx.signals.actions:
            if action.new and action.kind in ("ai_disclosure", "statutory_reminder"):
                fired.setdefault(action.kind, []).append((minute, action.laws))
    return fired


SIX_HOURS = list(range(0, 361, 10))


def _minutes(fired: dict[str, list[tuple[int, tuple[str, ...]]]], kind: str) -> list[int]:
    return [minute for minute, _ in fired.get(kind, [])]


@pytest.mark.parametrize(
    ("who", "laws", "misleading", "disclosure", "reminder", "named"),
    [
        # WA minor: the AI disclosure every hour (HB 2225 §3(1)(a)); the config's break +
        # not-human reminder for every known minor (every 3 h) stays.
        ("minor", [WA], False, [0, *HOURLY], [180, 360], {WA}),
        # OR minor: the break + not-human reminder every hour (SB 1546 §4(1)); the config's
        # default disclosure for minors every 3 h stays.
        ("minor", [OR], False, [0, 180, 360], HOURLY, {OR}),
        # NY adult: at the start and every 3 h (GBL §1702).
        ("adult", [NY], False, [0, 180, 360], [], {NY}),
        # CA adult: nothing, unless the deployer marks a misleading context (§22602(a)).
        ("adult", [CA], False, [], [], set()),
        ("adult", [CA], True, [0], [], {CA}),
        # CA minor: disclosed at the start, reminded every 3 h (§22602(c)).
        ("minor", [CA], False, [0, 180, 360], [180, 360], {CA}),
        # Two laws: the stricter schedule of each duty wins.
        ("minor", [NY, WA], False, [0, *HOURLY], [180, 360], {NY, WA}),
        ("minor", [CA, OR], False, [0, 180, 360], HOURLY, {CA, OR}),
        ("adult", [NY, EU], False, [0, 180, 360], [], {NY}),
        # EU: told at the first interaction.
        ("adult", [EU], False, [0], [], {EU}),
        # No law: the deployment's defaults (disclosure for known minors only).
        ("adult", [], False, [], [], set()),
    ],
)
async def test_statutory_schedule_per_law(
    who: str,
    laws: list[str],
    misleading: bool,
    disclosure: list[int],
    reminder: list[int],
    named: set[str],
) -> None:
    profile = Profile(
        user_id=f"{who}-{'-'.join(laws)}",
        age_band="13_15" if who == "minor" else "18_plus",
        jurisdictions=laws,
    )
    fired = await timeline(profile, SIX_HOURS, misleading=misleading)
    assert _minutes(fired, "ai_disclosure") == disclosure
    assert _minutes(fired, "statutory_reminder") == reminder
    assert {law for kind in fired.values() for _, cited in kind for law in cited} == named


async def test_eu_is_told_at_the_first_interaction_only_ny_every_day() -> None:
    """EU Art. 50: at the first interaction; NY §1702: at the start of each day's interaction."""
    next_day = [0, 10, 24 * 60, 24 * 60 + 10]
    eu = await timeline(Profile(user_id="eu", jurisdictions=[EU]), next_day)
    ny = await timeline(Profile(user_id="ny", jurisdictions=[NY]), next_day)
    assert _minutes(eu, "ai_disclosure") == [0]
    assert _minutes(ny, "ai_disclosure") == [0, 24 * 60]


async def test_the_deployers_disclosure_interval_is_honoured() -> None:
    """The ai-disclosure pack's ``interval_hours`` reaches the ladder through the real policy
    type (it was ignored once): every hour here, for an adult under no law."""
    policy = policy_from_dict(
        {"version": "hourly", "packs": [{"name": "ai-disclosure", "interval_hours": 1}]}
    )
    fired = await timeline(Profile(user_id="a", age_band="18_plus"), SIX_HOURS, policy=policy)
    assert _minutes(fired, "ai_disclosure") == [0, *HOURLY]


async def test_a_deployer_interval_and_a_law_the_shorter_wins() -> None:
    policy = policy_from_dict(
        {"version": "two-hourly", "packs": [{"name": "ai-disclosure", "interval_hours": 2}]}
    )
    ny = Profile(user_id="ny", age_band="18_plus", jurisdictions=[NY])
    fired = await timeline(ny, SIX_HOURS, policy=policy)
    assert _minutes(fired, "ai_disclosure") == [0, 120, 240, 360]
