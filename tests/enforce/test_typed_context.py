"""Finding 11 and the typed hand-off: the effective policy, the disclosure rule and the signals
result travel as typed fields of the call's context, not as ``ctx.state`` entries that a later
stage duck-types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from persona_mw import MemoryProfileStore, Middleware, Profile
from persona_mw.bounds import BoundsInputStage, EffectivePolicy, policy_from_dict
from persona_mw.bounds.policy import AIDisclosure
from persona_mw.signals import UsageEvent
from persona_mw.signals.action_state import MemoryActionStateStore
from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.metrics import SignalsMetrics
from persona_mw.signals.stage import DependenceStage
from persona_mw.signals.usage_store import MemoryUsageStore


async def sessions(user: str, now: datetime, minutes: int) -> MemoryUsageStore:
    """The real in-memory usage store holding one message every 10 minutes of the last
    ``minutes``: a continuing session."""
    store = MemoryUsageStore()
    await store.append(
        [UsageEvent(user, now - timedelta(minutes=m), "user") for m in range(minutes, 0, -10)]
    )
    return store


def _noon_zone(now: datetime) -> str:
    """A fixed-offset zone where it is about noon: no day boundary near the test's times."""
    offset = max(-12, min(14, 12 - now.hour))
    return f"Etc/GMT{'-' if offset >= 0 else '+'}{abs(offset)}"


async def test_the_deployers_disclosure_interval_is_applied() -> None:
    """A deployer's ``ai-disclosure`` pack with ``interval_hours: 1``: 70 minutes after the last
    disclosure in a continuing session, the notice is due again. The dependence stage used to
    look for ``interval`` / ``interval_minutes`` on the policy it duck-typed out of
    ``ctx.state``, missed ``interval_hours`` and kept the 3-hour default (no notice)."""
    now = datetime.now(UTC)
    policy = policy_from_dict(
        {"version": "t", "packs": [{"name": "ai-disclosure", "interval_hours": 1}]}
    )
    states = MemoryActionStateStore()
    await states.set("ada", {"ai_disclosure": now - timedelta(minutes=70)})
    store = MemoryProfileStore()
    await store.put(Profile(user_id="ada", timezone=_noon_zone(now)))
    dependence = DependenceStage(
        await sessions("ada", now, 120),
        config=SignalsConfig(events_cache_ttl_s=0),
        state_store=states,
        metrics=SignalsMetrics(CollectorRegistry()),
    )
    mw = Middleware(store=store, input_stages=[BoundsInputStage(policy=policy), dependence])
    ctx = await mw.begin(
        "ada",
        "openai/fake",
        [{"role": "user", "content": "hi"}],
        {},
        stream=False,
        surface="python",
    )
    await mw.run_input_stages(ctx)
    disclosures = [n.text for n in ctx.notices if n.source == "signals.ai_disclosure"]
    assert disclosures == [AIDisclosure().text]
    assert isinstance(ctx.policy, EffectivePolicy)
    assert ctx.disclosure == AIDisclosure(interval_hours=1)
    assert ctx.signals is not None and "ai_disclosure" in ctx.signals.kinds
