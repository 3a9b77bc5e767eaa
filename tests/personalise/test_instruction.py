"""build_instruction, the pure function: consent, parts, preferences, reduced mode, budget,
determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from persona_mw.errors import ConfigError
from persona_mw.personalise import (
    DROP_ORDER,
    PRIORITY,
    REDUCED_INSTRUCTION,
    PersonaliseConfig,
    build_instruction,
    estimate_tokens,
    load_personalise_config,
)

from .helpers import MINOR, TIER1, TIER2, TIERS, block, profile

ALL_PARTS = frozenset(PRIORITY)


@pytest.mark.parametrize(
    ("consent", "personalise", "parts", "withheld"),
    [
        ({"personalisation": True, "memory": True}, True, ALL_PARTS, ()),
        (
            {"personalisation": True, "memory": False},
            True,
            ALL_PARTS - {"memory", "name"},
            ("memory", "name"),
        ),
        ({"personalisation": False, "memory": True}, True, frozenset(), ()),
        ({"personalisation": True, "memory": True}, False, frozenset(), ()),
    ],
    ids=["all-consent", "no-memory-consent", "no-consent", "deployer-off"],
)
def test_consent_decides_the_parts(
    consent: dict[str, bool], personalise: bool, parts: frozenset[str], withheld: tuple[str, ...]
) -> None:
    result = build_instruction(
        profile(consent=consent),
        instructions=TIERS,
        personalise=personalise,
        budget_tokens=10_000,
    )
    assert result.parts == parts and result.withheld == withheld
    assert (result.personal_text == "") == (not parts)
    assert "Ana" in result.personal_text if "name" in parts else "Ana" not in result.text
    assert ("night-shift" in result.text) == ("memory" in parts)
    # Tier instructions do not depend on consent: they are bounds, not personalisation.
    assert TIER1.text in result.bounds_text and TIER2.text in result.bounds_text


def test_nothing_to_add_gives_empty_text() -> None:
    result = build_instruction(profile(consent={}))
    assert result.text == "" and result.tokens == 0 and result.parts == frozenset()


def test_tier_one_comes_first_and_duplicates_collapse() -> None:
    result = build_instruction(profile(), instructions=(TIER2, MINOR, TIER1, TIER2))
    text = result.bounds_text
    assert text.index(TIER1.text) < text.index(TIER2.text) < text.index(MINOR.text)
    assert text.count(TIER2.text) == 1
    assert "take precedence over every other instruction" in text


def test_order_in_the_text() -> None:
    """Bounds, then style, preferences, then the user-data block; the user's words only inside
    it, as JSON strings."""
    text = build_instruction(profile(), instructions=TIERS, budget_tokens=10_000).text
    order = [
        "<persona-mw:bounds>",
        TIER1.text,
        "</persona-mw:bounds>",
        "Style:",
        "Stated preferences:",
        "<user-data>",
        '"football"',
        '"Always give one concrete',
        '"I am a night-shift',
        '"Ana"',
        "</user-data>",
    ]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ({"language": "es"}, 'Reply in the language with BCP 47 tag "es".'),
        ({"tone": "formal"}, "Use a formal tone."),
        ({"tone": "direct"}, "Be direct; skip pleasantries."),
        ({"verbosity": "terse"}, "Be terse"),
        ({"verbosity": "detailed"}, "Give detailed, thorough answers."),
        ({"expertise": "novice"}, "Write for a novice"),
        ({"expertise": "expert"}, "Write for an expert"),
        ({"format": "bullets"}, "Use bullet points."),
        ({"format": "plain"}, "Use plain text without Markdown."),
    ],
)
def test_style_phrases(style: dict[str, str], expected: str) -> None:
    result = build_instruction(profile(style=style, own_rules="", self_description=""))
    assert expected in result.personal_text and "style" in result.parts


@pytest.mark.parametrize(
    ("preferences", "present", "absent"),
    [
        ({"factuality": 95}, ["Put factual accuracy first"], []),
        ({"factuality": 79}, [], ["factual"]),  # not strong enough
        ({"creativity": 10}, ["Stay conventional"], []),
        ({"creativity": 20}, ["Stay conventional"], []),
        ({"creativity": 21}, [], ["conventional", "creative"]),
        # Low scores never weaken safety, factuality, diversity (echo chambers) or helpfulness.
        (
            {"safety": 0, "factuality": 0, "diversity": 0, "helpfulness": 0},
            [],
            ["careful", "factual", "perspectives", "helpful"],
        ),
        ({"diversity": 100}, ["Offer a range of perspectives"], []),
    ],
)
def test_only_strong_preferences_are_phrased(
    preferences: dict[str, int], present: list[str], absent: list[str]
) -> None:
    text = build_instruction(profile(preferences=preferences)).personal_text
    for phrase in present:
        assert phrase in text
    for phrase in absent:
        assert phrase not in text.split("<user-data>")[0].split("Stated preferences:")[-1]
    assert ("preferences" in build_instruction(profile(preferences=preferences)).parts) == bool(
        present
    )


def test_strong_preference_threshold_is_configurable() -> None:
    prof = profile(preferences={"factuality": 70})
    assert "preferences" not in build_instruction(prof).parts
    assert "preferences" in build_instruction(prof, strong_preference=70).parts


@pytest.mark.parametrize("source", ["ladder", "profile"])
def test_reduced_mode(source: str) -> None:
    """No name, no memory call-backs, no friendly tone; the neutral-persona safeguard is a
    bound (it stays whatever the budget)."""
    prof = (
        profile(adjustable={"reduced_personalisation": True})
        if source == "profile"
        else (profile())
    )
    result = build_instruction(prof, reduced=source == "ladder", budget_tokens=0)
    full = build_instruction(prof, reduced=source == "ladder", budget_tokens=10_000)
    assert result.reduced and REDUCED_INSTRUCTION in result.bounds_text
    assert full.parts == ALL_PARTS - {"memory", "name"} and full.withheld == ("memory", "name")
    assert "Ana" not in full.text and "night-shift" not in full.text
    assert "friendly" not in full.text and "Use a neutral tone." in full.text


def _without(parts: tuple[str, ...]) -> dict[str, Any]:
    """Profile changes that remove these parts, so the rendered text equals a dropped one."""
    empty: dict[str, dict[str, Any]] = {
        "name": {"display_name": None},
        "memory": {"self_description": ""},
        "preferences": {"preferences": {}},
        "own_rules": {"own_rules": ""},
        "topics_to_avoid": {"topics_to_avoid": []},
        "style": {"style": {}},
    }
    changes: dict[str, Any] = {}
    for part in parts:
        changes.update(empty[part])
    return changes


@pytest.mark.parametrize("k", range(len(DROP_ORDER) + 1))
def test_budget_drops_lowest_priority_first(k: int) -> None:
    """With a budget exactly the size of the instruction minus the k lowest-priority parts,
    exactly those k parts are dropped, in DROP_ORDER."""
    assert DROP_ORDER == ("name", "memory", "preferences", "own_rules", "topics_to_avoid", "style")
    fits = build_instruction(
        profile(**_without(DROP_ORDER[:k])), instructions=TIERS, budget_tokens=10**6
    )
    result = build_instruction(profile(), instructions=TIERS, budget_tokens=fits.tokens)
    assert result.dropped == DROP_ORDER[:k]
    assert result.text == fits.text and result.tokens <= result.budget_tokens
    assert result.parts == ALL_PARTS - set(DROP_ORDER[:k])
    if k < len(DROP_ORDER):  # one token less drops the next part too
        tighter = build_instruction(profile(), instructions=TIERS, budget_tokens=fits.tokens - 1)
        assert tighter.dropped == DROP_ORDER[: k + 1]


def test_tier_instructions_survive_a_zero_budget() -> None:
    result = build_instruction(profile(), instructions=TIERS, budget_tokens=0)
    assert result.parts == frozenset() and result.personal_text == ""
    assert TIER1.text in result.text and TIER2.text in result.text
    assert result.over_budget and result.bounds_tokens == estimate_tokens(result.bounds_text)


def test_long_user_text_is_capped() -> None:
    result = build_instruction(
        profile(own_rules="rule " * 400), max_user_chars=100, budget_tokens=10_000
    )
    line = next(x for x in result.text.split("\n") if x.startswith("own_rules"))
    value = json.loads(line.split(": ", 1)[1])
    assert len(value) == 100 and value.endswith(" [cut]")


def test_same_profile_same_bytes() -> None:
    first = build_instruction(profile(), instructions=TIERS)
    second = build_instruction(profile(), instructions=TIERS)
    assert first == second and first.text == second.text


_SCRIPT = """
import json
from persona_mw.personalise import build_instruction
from persona_mw.profile import parse_profile
from persona_mw.types import Instruction
from tests.personalise.helpers import FULL, TIERS
print(json.dumps(build_instruction(parse_profile(FULL), instructions=TIERS).text))
"""


def test_same_bytes_across_processes() -> None:
    """Hash randomisation must not change the prompt (no set or dict order leaks into it)."""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == build_instruction(profile(), instructions=TIERS).text


def test_block_helper_finds_blocks() -> None:
    text = build_instruction(profile(), instructions=TIERS).text
    assert (
        block(text, "persona-mw:bounds")
        == build_instruction(profile(), instructions=TIERS).bounds_text
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"budget_tokens": -1}, "personalise.budget_tokens"),
        ({"max_user_text_chars": 5}, "personalise.max_user_text_chars"),
        ({"strong_preference": 50}, "personalise.strong_preference"),
        ({"budget": 10}, "personalise.budget"),
    ],
)
def test_bad_config_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_personalise_config(data, source="persona.yaml")
    assert caught.value.field == field and "persona.yaml" in str(caught.value)


def test_config_defaults() -> None:
    cfg = load_personalise_config({})
    assert cfg == PersonaliseConfig() and cfg.budget_tokens == 500 and cfg.enabled
