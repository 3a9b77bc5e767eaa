"""Which law applies: the deployment's, the profile's (deployer-owned) and the request's, all at
once; the effective tier 1 carries every duty of each; Oregon's crisis protocol interrupts."""

from __future__ import annotations

from typing import Any

import pytest

from persona_mw import Middleware
from persona_mw.bounds import BoundsConfig, BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.bounds.resolve import resolve
from persona_mw.errors import ConfigError, ProfileValidationError
from persona_mw.profile import Profile, parse_profile
from persona_mw.stores.memory import MemoryProfileStore
from persona_mw.types import CallContext

CA, NY, WA, OR, EU = (
    "us-ca-sb243",
    "us-ny-gbl-art47",
    "us-wa-hb2225",
    "us-or-sb1546",
    "eu-ai-act-art50",
)
MODEL = "openai/fake"
#: A deployer policy without any of the packs the laws ask for.
BARE = policy_from_dict({"version": "bare-1", "packs": ["pii"]})


def _rules(effective: Any) -> dict[str, tuple[int, str]]:
    return {r.rule.id: (r.rule.tier, r.reason) for r in effective.rules}


def test_a_law_brings_its_rules_in_at_tier_1_even_if_the_deployer_left_them_out() -> None:
    minor = Profile(user_id="kid", age_band="13_15", jurisdictions=[WA])
    rules = _rules(resolve(BARE, minor))
    assert rules["minor-safety.relationship"][0] == 1
    assert "required by us-wa-hb2225" in rules["minor-safety.relationship"][1]
    assert rules["crisis.ideation"][0] == 1
    assert rules["ai-disclosure.not-human"][0] == 1
    assert "minor-safety.sexual" not in _rules(
        resolve(BARE, Profile(user_id="a", jurisdictions=[WA]))
    )
    assert "crisis.ideation" not in _rules(resolve(BARE, Profile(user_id="b")))


def test_a_law_raises_a_tier_2_pack_rule_to_tier_1() -> None:
    policy = policy_from_dict({"version": "p", "packs": ["minor-safety"]})
    kid = Profile(user_id="kid", age_band="13_15")
    assert _rules(resolve(policy, kid))["minor-safety.persona"][0] == 2
    assert _rules(resolve(policy, kid, jurisdictions=[OR]))["minor-safety.persona"][0] == 1


def test_deployment_profile_and_request_laws_all_apply() -> None:
    stage = BoundsInputStage(policy=BARE, jurisdictions=[NY])
    effective = stage.effective(Profile(user_id="u", jurisdictions=[OR]), [EU])
    assert effective.compliance.laws == (EU, NY, OR)
    explained = stage.explain(Profile(user_id="u", jurisdictions=[OR]))
    assert explained["jurisdictions"] == [NY, OR]
    crisis = next(d for d in explained["duties"] if d["duty"] == "crisis_protocol")
    assert crisis["behaviour"] == "interrupt"
    assert {ref["law"] for ref in crisis["required_by"]} == {NY, OR}


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (
            lambda: parse_profile({"user_id": "u", "jurisdictions": ["us-xx"]}),
            "unknown jurisdiction",
        ),
        (lambda: BoundsConfig(jurisdictions=("us-ny",)), "unknown jurisdiction"),
    ],
)
def test_unknown_codes_are_refused_with_the_known_ones(make: Any, says: str) -> None:
    with pytest.raises((ProfileValidationError, ValueError)) as info:
        make()
    assert says in str(info.value)
    assert NY in str(info.value)


async def _middleware(*profiles: Profile, **stage_kw: Any) -> tuple[Middleware, list[CallContext]]:
    store = MemoryProfileStore()
    for profile in profiles:
        await store.put(profile)
    seen: list[CallContext] = []

    class Collect:
        name = "collect"

        async def __call__(self, ctx: CallContext) -> None:
            seen.append(ctx)

    mw = Middleware(
        store=store,
        input_stages=[BoundsInputStage(policy=BARE, **stage_kw)],
        output_stages=[BoundsOutputStage(policy=BARE, **stage_kw)],
        finish_stages=[Collect()],
    )
    return mw, seen


async def test_a_request_law_that_is_unknown_fails_before_anything_runs() -> None:
    mw, seen = await _middleware()
    with pytest.raises(ConfigError, match="unknown jurisdiction"):
        await mw.acompletion(
            user="u",
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            jurisdictions=["us-xx"],
            mock_response="hello",
        )
    assert seen == []


CRISIS = "I think I want to end my life"


async def test_oregon_interrupts_the_conversation_and_later_turns_carry_the_resources() -> None:
    """OR SB 1546 §3: the reply is replaced by the protocol's response (the model's words never
    reach the user); the next turns of that conversation carry the resources too."""
    mw, seen = await _middleware(Profile(user_id="ore", jurisdictions=[OR]))
    first = [{"role": "user", "content": CRISIS}]
    response = await mw.acompletion(user="ore", model=MODEL, messages=first, mock_response="MODEL")
    text = response.choices[0].message.content
    assert "MODEL" not in text
    assert "988" in text
    assert response.choices[0].finish_reason == "content_filter"
    assert [d.rule_id for d in seen[0].decisions] == ["crisis.ideation"]

    later = [*first, {"role": "assistant", "content": text}, {"role": "user", "content": "ok"}]
    response = await mw.acompletion(user="ore", model=MODEL, messages=later, mock_response="Sure.")
    text = response.choices[0].message.content
    assert text.startswith("Sure.")
    assert "988" in text


async def test_a_refer_law_adds_resources_but_lets_the_model_answer() -> None:
    mw, _ = await _middleware(Profile(user_id="nyc", jurisdictions=[NY]))
    messages = [{"role": "user", "content": CRISIS}]
    response = await mw.acompletion(
        user="nyc", model=MODEL, messages=messages, mock_response="MODEL"
    )
    text = response.choices[0].message.content
    assert text.startswith("MODEL") and "988" in text
    later = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": "ok"}]
    response = await mw.acompletion(user="nyc", model=MODEL, messages=later, mock_response="Sure.")
    assert response.choices[0].message.content == "Sure."


async def test_the_deployment_default_law_applies_to_users_without_one() -> None:
    mw, _ = await _middleware(jurisdictions=[OR])
    response = await mw.acompletion(
        user="anyone",
        model=MODEL,
        messages=[{"role": "user", "content": CRISIS}],
        mock_response="MODEL",
    )
    assert "MODEL" not in response.choices[0].message.content


async def test_a_request_law_applies_to_that_call_only() -> None:
    mw, _ = await _middleware()
    messages = [{"role": "user", "content": CRISIS}]
    response = await mw.acompletion(
        user="gw", model=MODEL, messages=messages, jurisdictions=[OR], mock_response="MODEL"
    )
    assert "MODEL" not in response.choices[0].message.content
    response = await mw.acompletion(
        user="gw", model=MODEL, messages=messages, mock_response="MODEL"
    )
    assert response.choices[0].message.content == "MODEL"


def test_policy_explain_shows_which_law_requires_each_duty(tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from persona_mw.cli.bounds import policy

    creative = tmp_path / "p.yaml"
    creative.write_text("version: p\npacks: [pii]\n")
    profile = tmp_path / "kid.json"
    profile.write_text(json.dumps({"user_id": "kid", "age_band": "13_15", "jurisdictions": [WA]}))
    result = CliRunner().invoke(
        policy,
        ["explain", "--policy", str(creative), "--profile", str(profile), "--jurisdiction", NY],
    )
    assert result.exit_code == 0, result.output
    explained = json.loads(result.output)
    assert explained["jurisdictions"] == [NY, WA]
    by_duty = {d["duty"]: d for d in explained["duties"] if d["duty"] != "rule"}
    assert by_duty["ai_disclosure_every"]["minutes"] == 60.0
    assert [r["law"] for r in by_duty["ai_disclosure_every"]["required_by"]] == [WA]
    assert {r["law"] for r in by_duty["ai_disclosure_at_start"]["required_by"]} == {NY, WA}
    rules = {r["id"]: r for r in explained["rules"]}
    assert rules["minor-safety.relationship"]["tier"] == 1

    bad = CliRunner().invoke(
        policy, ["explain", "--policy", str(creative), "--jurisdiction", "xx-y"]
    )
    assert bad.exit_code != 0
    assert "unknown jurisdiction" in bad.output


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_users_delete_keeps_their_laws_and_leaves_nothing_when_none(
    kind: str, redis_url: str, key_prefix: str
) -> None:
    """Laws are deployer-owned: a delete by the user's key keeps them (in one atomic step); a
    user with no law and no other kept field is left with no profile at all."""
    from persona_mw_server import DEPLOYER_FIELDS

    from persona_mw.stores.redis import RedisProfileStore
    from persona_mw.types import ProfileStore

    store: ProfileStore = (
        MemoryProfileStore()
        if kind == "memory"
        else RedisProfileStore(redis_url, prefix=key_prefix)
    )
    try:
        await store.put(Profile(user_id="wa", jurisdictions=[WA], own_rules="be brief"))
        await store.put(Profile(user_id="none", own_rules="be brief"))
        assert await store.delete("wa", keep=DEPLOYER_FIELDS)
        kept = await store.get("wa")
        assert kept is not None and kept.jurisdictions == [WA] and kept.own_rules == ""
        assert await store.delete("none", keep=DEPLOYER_FIELDS)
        assert await store.get("none") is None
    finally:
        await store.aclose()
