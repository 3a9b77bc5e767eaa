"""Resolution: tier 3 only narrows, except inside a deployer-declared adjustable range for
eligible users; every rule in force says why; results are memoised."""

from __future__ import annotations

from typing import Any

import pytest

from persona_mw.bounds import policy_from_dict, resolve
from persona_mw.profile import Profile

POLICY = policy_from_dict(
    {
        "version": "t-1",
        "packs": ["crisis", "ai-disclosure", "minor-safety", "profanity"],
        "rules": [
            {
                "id": "politics.viewpoints",
                "tier": 2,
                "stage": "input",
                "instruction": "Present several viewpoints.",
            },
            {
                "id": "companion",
                "tier": 2,
                "stage": "output",
                "detector": {"kind": "relationship", "threshold": 0.8},
                "action": "redact",
                "replacement": "",
                "adjustable": {
                    "parameter": "threshold",
                    "range": [70, 95],
                    "eligibility": "all",
                },
            },
        ],
    }
)


def effective(**fields: Any) -> Any:
    return resolve(POLICY, Profile(user_id="u", **fields))


def reasons(eff: Any) -> dict[str, str]:
    return {r.rule.id: r.reason for r in eff.rules}


@pytest.mark.parametrize(
    ("fields", "profanity_in_force", "reason_part"),
    [
        ({}, True, "tier 2: deployer policy"),
        (
            {"age_band": "18_plus", "adjustable": {"profanity": "off"}},
            False,
            "user opted out (profanity=off); allowed for adults",
        ),
        ({"age_band": "unknown", "adjustable": {"profanity": "off"}}, True, "for adults only"),
        ({"age_band": "16_17", "adjustable": {"profanity": "off"}}, True, "for adults only"),
        (
            {"age_band": "18_plus", "known_minor": True, "adjustable": {"profanity": "off"}},
            True,
            "for adults only",
        ),
        (
            {"age_band": "18_plus", "adjustable": {"profanity": "block"}},
            True,
            "outside the allowed choices",
        ),
        (
            {
                "age_band": "18_plus",
                "adjustable": {"profanity": "off"},
                "bounds": {"enable_packs": ["profanity"]},
            },
            True,
            "also switched the pack on",
        ),
    ],
)
def test_profanity_is_adjustable_for_adults_only(
    fields: dict[str, Any], profanity_in_force: bool, reason_part: str
) -> None:
    eff = effective(**fields)
    explained = {**reasons(eff), **dict(eff.not_in_force)}
    assert ("profanity" in reasons(eff)) is profanity_in_force
    assert reason_part in explained["profanity"]
    if profanity_in_force:
        assert next(r for r in eff.rules if r.rule.id == "profanity").rule.action == "redact"


@pytest.mark.parametrize(
    ("choice", "threshold", "reason_part"),
    [
        (90, 0.9, "user set companion=90"),
        (50, 0.8, "outside the allowed choices"),
        (True, 0.8, "outside"),
    ],
)
def test_numeric_choice_inside_declared_range(
    choice: Any, threshold: float, reason_part: str
) -> None:
    eff = effective(adjustable={"companion": choice})
    rule = next(r for r in eff.rules if r.rule.id == "companion")
    assert rule.rule.detector.threshold == threshold  # type: ignore[union-attr]
    assert reason_part in rule.reason


def test_minor_rules_only_for_known_minors() -> None:
    minor = effective(age_band="13_15")
    adult = effective(age_band="18_plus")
    assert {"minor-safety.sexual", "minor-safety.persona", "minor-safety.relationship"} <= set(
        reasons(minor)
    )
    assert "the user is a known minor" in reasons(minor)["minor-safety.sexual"]
    assert not {"minor-safety.sexual"} & set(reasons(adult))
    assert dict(adult.not_in_force)["minor-safety.sexual"].startswith("for known minors only")
    assert any(i.source == "minor-safety.persona" for i in minor.instructions)
    assert not any(i.source == "minor-safety.persona" for i in adult.instructions)


def test_instructions_in_tier_order() -> None:
    eff = effective()
    assert [(i.tier, i.source) for i in eff.instructions] == [
        (1, "ai-disclosure.not-human"),
        (2, "politics.viewpoints"),
    ]


def test_user_bounds_narrow() -> None:
    eff = effective(bounds={"block_phrases": ["Red Wedding"], "enable_packs": ["pii", "astrology"]})
    why = reasons(eff)
    assert why["user.block-phrases"].startswith("tier 3")
    assert why["pii"] == "tier 3: the user switched on the 'pii' pack"
    assert next(r for r in eff.rules if r.rule.id == "pii").rule.tier == 3
    assert "pack:astrology" in dict(eff.not_in_force)
    hits = eff.output.scan("They spoke of the red  wedding.")
    assert [h.rule.rule.id for h in hits] == ["user.block-phrases"]


def test_tier_one_cannot_be_touched_from_a_profile() -> None:
    """A profile naming a tier-1 rule as an 'adjustable option' changes nothing."""
    eff = effective(
        age_band="18_plus", adjustable={"crisis.ideation": "off", "minor-safety.sexual": "off"}
    )
    assert reasons(eff)["crisis.ideation"] == "tier 1: law (immutable)"
    assert next(r for r in eff.rules if r.rule.id == "crisis.ideation").rule.action == "append"


def test_ai_disclosure_declared_per_audience() -> None:
    assert effective().ai_disclosure is not None
    assert effective().ai_disclosure.interval_hours == 3  # type: ignore[union-attr]
    minors_only = policy_from_dict({"packs": [{"name": "ai-disclosure", "audience": "minors"}]})
    assert resolve(minors_only, Profile(user_id="a", age_band="18_plus")).ai_disclosure is None
    kid = resolve(minors_only, Profile(user_id="k", known_minor=True)).ai_disclosure
    assert kid is not None and kid.audience == "minors"


def test_resolution_is_memoised_on_what_matters() -> None:
    """Same policy and same relevant profile fields give the same (compiled) object, even for
    another user or version; a change that matters gives a new one."""
    a = resolve(POLICY, Profile(user_id="a", version=3, display_name="A"))
    b = resolve(POLICY, Profile(user_id="b", version=9))
    c = resolve(POLICY, Profile(user_id="a", version=4, age_band="13_15"))
    assert a is b
    assert c is not a


def test_explain_is_plain_data() -> None:
    explained = effective(age_band="18_plus", adjustable={"profanity": "off"}).explain()
    assert explained["policy_version"] == "t-1"
    assert {
        "id": "profanity",
        "reason": "user opted out (profanity=off); allowed for adults",
    } in explained["not_in_force"]
    crisis = next(r for r in explained["rules"] if r["id"] == "crisis.ideation")
    assert crisis == {
        "id": "crisis.ideation",
        "tier": 1,
        "stage": "input",
        "detector": "phrases",
        "action": "append",
        "reason": "tier 1: law (immutable)",
    }


def test_a_users_own_phrases_do_not_rebuild_the_policys_phrase_index() -> None:
    """Every user with block phrases of their own has an effective policy of their own. The
    policy's phrases (the crisis pack's families: tens of thousands of keys) are indexed once
    and shared; only the user's few phrases are indexed per user. Before, each such user cost a
    new index of everything: ~45 MB and a third of a second with the crisis families."""
    import tracemalloc

    policy = policy_from_dict(
        {"version": "t", "packs": ["crisis", "profanity", "pii"], "rules": []}
    )

    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]

    def scanners(i: int) -> None:
        word = names[i % len(names)] + names[i // len(names)]
        profile = Profile(user_id=f"u{i}", bounds={"block_phrases": [f"secret {word}"]})
        eff = resolve(policy, profile)
        assert [h.rule.rule.id for h in eff.output.scan(f"a SECRET  {word} here")] == [
            "user.block-phrases"
        ]
        assert eff.input.scan("i want to kill myself"), "the shared pack phrases still hit"

    scanners(10)  # the shared index, built once
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(10):
        scanners(i)
    per_user = (tracemalloc.get_traced_memory()[0] - before) / 10
    tracemalloc.stop()
    assert per_user < 512 * 1024, f"{per_user / 1024:.0f} KiB of Python objects per user"


@pytest.mark.parametrize("phrase", ["{", "}", "{a|b}", "red {wedding", "|"])
def test_a_users_phrase_is_literal_even_with_family_braces(phrase: str) -> None:
    """Braces are the deployer's phrase-family syntax; in a user's own phrases they are just
    characters (a property test found that "{" used to fail the whole resolve)."""
    eff = effective(bounds={"block_phrases": [phrase, "Red Wedding"]})
    hits = eff.output.scan("They spoke of the red wedding.")
    assert [h.rule.rule.id for h in hits] == ["user.block-phrases"]
