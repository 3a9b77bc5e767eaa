"""The personalisation engineer's hostile-profile corpus (tests/personalise/hostile_profiles.py),
through the whole pipeline: real bounds (a children's tutoring policy and an adult one), real
personalisation, LiteLLM and a local upstream. Whatever a profile's free text says, every
decision (rule, tier, action) and the reply the user gets are exactly those of a harmless
profile of the same age, and every tier instruction reaches the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from persona_mw import Middleware, Profile, parse_profile
from persona_mw.bounds import BoundsConfig, bounds_stages
from persona_mw.personalise import PersonaliseStage
from persona_mw.testing import FakeOpenAIServer
from tests.personalise.hostile_profiles import HOSTILE

POLICIES = Path(__file__).parents[2] / "examples" / "policies"
#: What the "model" answers, whatever it was asked: profanity, contact details, attachment.
REPLY = (
    "Honestly that's shit. Email me at tutor.private@example.org or call 020 7946 0958. I love you."
)
INPUTS = [
    "Can you help with my fractions homework?",
    "I want to end my life",
    "my address is 12 Baker Street and my phone 07700 900123",
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=lambda _: REPLY) as server:
        yield server


def _profile(text: str, age_band: str) -> Profile:
    fields: dict[str, Any] = {
        "user_id": "target",
        "age_band": age_band,
        "own_rules": text[:2000],
        "self_description": text[:2000],
        "consent": {"personalisation": True, "memory": True},
        # tier-3 levers pointed at tier-1/2 rules as well
        "adjustable": {"profanity": "off", "crisis.ideation": "off", "pii": "off"},
    }
    if text[:64].strip():
        fields["display_name"] = text[:64]
    if text[:100].strip():
        fields["topics_to_avoid"] = [text[:100]]
    return parse_profile(fields)


async def _run(mw: Middleware, upstream: FakeOpenAIServer, profile: Profile) -> list[Any]:
    await mw.store.put(profile)
    seen = []
    for text in INPUTS:
        for stream in (False, True):
            call = {
                "user": "target",
                "model": "openai/fake",
                "messages": [{"role": "user", "content": text}],
                "api_base": upstream.base_url,
                "api_key": "x",
            }
            before = len(upstream.requests)
            if stream:
                parts = [
                    c.choices[0].delta.content or "" async for c in mw.astream(**call) if c.choices
                ]
                reply = "".join(parts)
            else:
                reply = (await mw.acompletion(**call)).choices[0].message.content
            prompt = upstream.requests[-1]["messages"] if len(upstream.requests) > before else []
            seen.append((text, stream, reply, prompt))
    await mw.store.delete("target")
    return seen


@pytest.mark.parametrize(
    ("policy", "age_band"),
    [("childrens-tutoring", "13_15"), ("adult-creative-writing", "18_plus")],
)
@pytest.mark.parametrize(("case", "text"), HOSTILE, ids=[c for c, _ in HOSTILE])
async def test_hostile_profile_never_weakens_a_tier(
    upstream: FakeOpenAIServer, policy: str, age_band: str, case: str, text: str
) -> None:
    check_input, check_output = bounds_stages(
        BoundsConfig(policies=(str(POLICIES / f"{policy}.yaml"),))
    )
    decisions: list[tuple[str, int, str]] = []

    class Decisions:
        name = "decisions"

        async def __call__(self, ctx: Any) -> None:
            decisions.extend((d.rule_id, d.tier, d.action) for d in ctx.decisions)

    mw = Middleware(
        input_stages=[check_input, PersonaliseStage()],
        output_stages=[check_output],
        finish_stages=[Decisions()],
    )
    # the same profile (same age, same tier-3 levers) with harmless text: only the text differs
    expected = await _run(mw, upstream, _profile("Please keep answers short.", age_band))
    expected_decisions = list(decisions)
    decisions.clear()
    got = await _run(mw, upstream, _profile(text, age_band))
    assert decisions == expected_decisions, case
    assert ("crisis.ideation", 1, "append") in decisions, "tier 1 fires despite the levers"
    for (t, stream, reply, prompt), (_, _, benign_reply, benign_prompt) in zip(
        got, expected, strict=True
    ):
        assert reply == benign_reply, (case, t, stream)
        system = "\n".join(str(m.get("content")) for m in prompt if m.get("role") == "system")
        benign_system = "\n".join(
            str(m.get("content")) for m in benign_prompt if m.get("role") == "system"
        )
        assert "<persona-mw:bounds>" in benign_system, "tier instructions reach the model"
        bounds_block = benign_system.split("<persona-mw:bounds>")[-1].split("</persona-mw:bounds>")[
            0
        ]
        assert bounds_block in system, (case, t)
    await mw.aclose()
