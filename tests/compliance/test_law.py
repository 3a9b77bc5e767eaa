"""Jurisdiction packs: every shipped file validates; a bad file names the file, field and fix."""

from __future__ import annotations

from typing import Any

import pytest

from persona_mw.bounds.packs import check_law_rules
from persona_mw.compliance import (
    CrisisDuty,
    DisclosureDuty,
    ReminderDuty,
    jurisdiction,
    known_codes,
    parse_jurisdiction,
)
from persona_mw.errors import PolicyError

SHIPPED = ("eu-ai-act-art50", "us-ca-sb243", "us-ny-gbl-art47", "us-or-sb1546", "us-wa-hb2225")


def test_the_five_laws_ship_and_validate() -> None:
    assert known_codes() == SHIPPED
    for code in SHIPPED:
        law = jurisdiction(code)
        assert law.code == code
        assert all(duty.cite for duty in law.duties)


def test_every_rule_a_law_names_is_a_built_in_pack_rule() -> None:
    for code in SHIPPED:
        check_law_rules(jurisdiction(code), source=f"{code}.yaml")


def test_a_law_naming_an_unknown_rule_is_refused_where_the_bounds_apply_it() -> None:
    """The laws are read without the packs (which build on them); the bounds check the tie."""
    duty = {"kind": "content_ban", "covers": ["sexual_content"], "rules": ["minor-safety.nope"]}
    law = parse_jurisdiction(_law(**duty), source="laws/xx-test.yaml")
    with pytest.raises(PolicyError) as info:
        check_law_rules(law, source="laws/xx-test.yaml")
    assert info.value.source == "laws/xx-test.yaml"
    assert info.value.field == "duties.0.content_ban.rules"
    assert "unknown rule id(s) ['minor-safety.nope']; use the ids of the built-in packs" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("code", "kind", "audience", "hours"),
    [
        ("us-wa-hb2225", "disclosure", "minors", 1.0),
        ("us-wa-hb2225", "disclosure", "all", 3.0),
        ("us-ny-gbl-art47", "disclosure", "all", 3.0),
        ("us-or-sb1546", "reminder", "minors", 1.0),
        ("us-ca-sb243", "reminder", "minors", 3.0),
    ],
)
def test_intervals_as_the_statutes_say(code: str, kind: str, audience: str, hours: float) -> None:
    duties = [
        d
        for d in jurisdiction(code).duties
        if isinstance(d, DisclosureDuty | ReminderDuty)
        and d.kind == kind
        and d.audience == audience
    ]
    assert [d.every_hours for d in duties] == [hours]


def test_oregon_interrupts() -> None:
    crisis = [d for d in jurisdiction("us-or-sb1546").duties if isinstance(d, CrisisDuty)]
    assert [d.behaviour for d in crisis] == ["interrupt"]


def _law(**duty: Any) -> dict[str, Any]:
    return {
        "code": "xx-test",
        "name": "Test",
        "citation": "Test Act",
        "in_force": "2027-01-01",
        "duties": [{"cite": "Test Act §1", **duty}],
    }


@pytest.mark.parametrize(
    ("duty", "field", "says"),
    [
        ({"kind": "disclosure", "every_hours": 0}, "duties.0.disclosure.every_hours", "greater"),
        ({"kind": "disclosur"}, "duties.0", "unknown duty kind"),
        ({"kind": "disclosure", "at_start": "none"}, "duties.0.disclosure", "needs `at_start`"),
        (
            {"kind": "content_ban", "covers": ["sexual_content"]},
            "duties.0.content_ban",
            "needs `rules`",
        ),
        ({"kind": "marking", "colour": "red"}, "duties.0.marking.colour", "unknown field"),
    ],
)
def test_a_bad_file_names_the_file_field_and_fix(
    duty: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_jurisdiction(_law(**duty), source="laws/xx-test.yaml")
    assert info.value.source == "laws/xx-test.yaml"
    assert info.value.field == field
    assert says in str(info.value)


def test_an_unknown_code_lists_the_known_ones() -> None:
    with pytest.raises(PolicyError, match=r"unknown jurisdiction 'us-xx'.*us-ca-sb243"):
        jurisdiction("us-xx")


def test_policy_protocol_prints_the_text_generated_from_the_packs() -> None:
    from click.testing import CliRunner

    from persona_mw.bounds.packs import pack_rules
    from persona_mw.cli.bounds import policy

    ideation = next(r for r in pack_rules("crisis") if r.id == "crisis.ideation")
    assert ideation.message is not None
    result = CliRunner().invoke(policy, ["protocol", "us-or-sb1546"])
    assert result.exit_code == 0, result.output
    assert "SB 1546 §3" in result.output
    assert "interrupted" in result.output
    assert ideation.message.strip() in result.output
    ny = CliRunner().invoke(policy, ["protocol", "us-ny-gbl-art47"])
    assert "harm to others" in ny.output and "interrupted" not in ny.output
    eu = CliRunner().invoke(policy, ["protocol", "eu-ai-act-art50"])
    assert eu.exit_code == 1 and "asks for no crisis protocol" in eu.output
