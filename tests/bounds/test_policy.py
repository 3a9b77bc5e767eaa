"""Loading policy files: every bad file fails at load naming the file, the rule and the reason;
nothing loosens a tier-1 rule; a loaded policy cannot be changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from persona_mw.bounds import load_policy, policy_from_dict
from persona_mw.errors import PolicyError

RULE = {"id": "r1", "tier": 2, "detector": {"kind": "phrases", "phrases": ["x"]}, "message": "no"}


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("documents", "rule_id", "reason"),
    [
        ([{"rules": [{**RULE, "colour": "red"}]}], "r1", "unknown field"),
        ([{"polcy": 1}], None, "unknown field"),
        ([{"rules": [RULE, RULE]}], "r1", "duplicate rule id"),
        ([{"rules": [RULE]}, {"rules": [RULE]}], "r1", "duplicate rule id"),
        (
            [{"rules": [{**RULE, "detector": {"kind": "regex", "pattern": "(unclosed"}}]}],
            "r1",
            "invalid regular expression",
        ),
        (
            [{"rules": [{**RULE, "detector": {"kind": "regex", "pattern": "a*"}}]}],
            "r1",
            "empty string",
        ),
        ([{"rules": [{**RULE, "tier": 3}]}], "r1", "tier 3 is the user's"),
        ([{"rules": [{**RULE, "message": None}]}], "r1", "needs a `message`"),
        (
            [{"rules": [{**RULE, "tier": 1, "adjustable": {"values": ["off"]}}]}],
            "r1",
            "cannot be user-adjustable",
        ),
        (
            [{"packs": ["crisis"]}, {"overrides": [{"id": "crisis.ideation", "action": "log"}]}],
            "crisis.ideation",
            "immutable",
        ),
        (
            [{"packs": ["crisis"], "overrides": [{"id": "crisis.ideation", "message": "hi"}]}],
            "crisis.ideation",
            "immutable",
        ),
        (
            [{"packs": ["crisis"], "disable": ["crisis.methods"]}],
            "crisis.methods",
            "cannot be disabled",
        ),
        ([{"packs": [{"name": "crisis", "tier": 2}]}], None, "does not take"),
        (
            [{"packs": [{"name": "ai-disclosure", "interval_hours": 4}]}],
            "ai-disclosure",
            "loosen a tier-1 rule",
        ),
        (
            [
                {
                    "packs": [{"name": "pii", "action": "block", "message": "m"}],
                    "overrides": [{"id": "pii", "action": "log"}],
                }
            ],
            "pii",
            "loosen the rule",
        ),
        (
            [{"packs": ["pii"]}, {"packs": [{"name": "pii", "action": "log"}]}],
            None,
            "switched on twice",
        ),
        ([{"packs": ["telepathy"]}], None, "packs.0.name"),
        ([{"overrides": [{"id": "nope", "action": "block"}]}], "nope", "unknown rule"),
        (
            [
                {
                    "rules": [
                        {
                            **RULE,
                            "stage": "input",
                            "action": "redact",
                            "detector": {"kind": "judge", "categories": ["S1"]},
                        }
                    ]
                }
            ],
            "r1",
            "cannot redact",
        ),
        (
            [{"rules": [{**RULE, "detector": {"kind": "moderation", "categories": ["gore"]}}]}],
            "r1",
            "unknown moderation categories ['gore']",
        ),
        (
            [
                {
                    "rules": [
                        {**RULE, "stage": "output", "detector": {"kind": "moderation", "window": 9}}
                    ]
                }
            ],
            "r1",
            "window",
        ),
        (
            [{"rules": [{**RULE, "detector": {"kind": "moderation", "packs": False}}]}],
            "r1",
            "needs `categories`, `packs: true`, or both",
        ),
        (
            [
                {
                    "rules": [
                        {
                            **RULE,
                            "detector": {
                                "kind": "judge",
                                "categories": ["S1: Violent crimes"],
                                "packs": {"S11": "crisis"},
                            },
                        }
                    ]
                }
            ],
            "r1",
            "`packs` names categories ['S11'] that are not in `categories`",
        ),
        (
            [
                {
                    "rules": [
                        {
                            **RULE,
                            "stage": "input",
                            "instruction": "be careful",
                            "detector": {"kind": "moderation", "categories": ["hate"]},
                        }
                    ]
                }
            ],
            "r1",
            "cannot carry an `instruction`",
        ),
    ],
)
def test_bad_policy_fails_at_load_with_file_rule_and_reason(
    tmp_path: Path, documents: list[dict[str, Any]], rule_id: str | None, reason: str
) -> None:
    paths = [write(tmp_path, f"p{i}.yaml", doc) for i, doc in enumerate(documents)]
    with pytest.raises(PolicyError) as caught:
        load_policy(*paths)
    error = caught.value
    assert reason in str(error)
    assert error.rule_id == rule_id
    assert error.source is not None and error.source.startswith(str(tmp_path))


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="top level must be a mapping"):
        load_policy(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("rules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(tmp_path / "bad.yaml")
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy()


def test_later_file_may_tighten_tier_two_and_disable_pack_rules(tmp_path: Path) -> None:
    base = write(
        tmp_path, "base.yaml", {"version": "base-1", "packs": ["pii", "profanity", "crisis"]}
    )
    local = write(
        tmp_path,
        "local.yaml",
        {
            "version": "local-2",
            "overrides": [{"id": "pii", "action": "block", "message": "no PII"}],
            "disable": ["profanity"],
        },
    )
    policy = load_policy(base, local)
    assert policy.version == "base-1+local-2"
    assert policy.rule("pii").action == "block"
    assert policy.rule("pii").message == "no PII"
    assert "profanity" not in {r.id for r in policy.rules}
    assert policy.sources == (str(base), str(local))


def test_pack_options_configure_without_loosening() -> None:
    policy = policy_from_dict(
        {
            "packs": [
                {"name": "pii", "tier": 1, "kinds": ["email"], "stage": "input"},
                {"name": "ai-disclosure", "audience": "minors", "interval_hours": 1},
                {"name": "crisis", "message": "Call 116 123 (Samaritans)."},
                {"name": "profanity", "adjustable": False, "extra_phrases": ["feck"]},
            ]
        }
    )
    pii = policy.rule("pii")
    assert (pii.tier, pii.stage, pii.adjustable) == (1, "input", None)
    assert policy.ai_disclosure is not None
    assert (policy.ai_disclosure.audience, policy.ai_disclosure.interval_hours) == ("minors", 1)
    assert policy.rule("crisis.ideation").message == "Call 116 123 (Samaritans)."
    profanity = policy.rule("profanity")
    assert profanity.adjustable is None
    assert profanity.detector is not None and "feck" in profanity.detector.phrases  # type: ignore[union-attr]


def test_loaded_policy_is_immutable() -> None:
    policy = policy_from_dict({"packs": ["crisis"]})
    with pytest.raises(pydantic.ValidationError):
        policy.version = "x"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        policy.rules[0].action = "log"  # type: ignore[misc]
    assert isinstance(policy.rules, tuple)


def test_version_defaults_to_a_content_hash() -> None:
    a = policy_from_dict({"packs": ["crisis"]})
    b = policy_from_dict({"packs": ["crisis"]})
    c = policy_from_dict({"packs": ["crisis", "pii"]})
    assert a.version.startswith("sha256:")
    assert a.version == b.version != c.version
