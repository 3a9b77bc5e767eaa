"""The effective tier 1: the union of the applicable laws' duties, shortest interval wins."""

from __future__ import annotations

import pytest

from persona_mw.compliance import compliance_for

CA, NY, WA, OR, EU = (
    "us-ca-sb243",
    "us-ny-gbl-art47",
    "us-wa-hb2225",
    "us-or-sb1546",
    "eu-ai-act-art50",
)


@pytest.mark.parametrize(
    ("codes", "minor", "misleading", "at_start", "every", "every_laws", "reminder", "rem_laws"),
    [
        ((), False, False, None, None, (), None, ()),
        ((CA,), False, False, None, None, (), None, ()),
        ((CA,), False, True, "daily", None, (), None, ()),
        ((CA,), True, False, "daily", None, (), 180.0, (CA,)),
        ((NY,), False, False, "daily", 180.0, (NY,), None, ()),
        ((NY,), True, False, "daily", 180.0, (NY,), None, ()),
        ((WA,), False, False, "daily", 180.0, (WA,), None, ()),
        ((WA,), True, False, "daily", 60.0, (WA,), None, ()),
        ((OR,), False, False, None, None, (), None, ()),
        ((OR,), True, False, None, None, (), 60.0, (OR,)),
        ((EU,), False, False, "first", None, (), None, ()),
        ((EU, NY), False, False, "daily", 180.0, (NY,), None, ()),
        ((NY, WA), True, False, "daily", 60.0, (WA,), None, ()),
        ((NY, WA), False, False, "daily", 180.0, (NY, WA), None, ()),
        ((CA, OR), True, False, "daily", None, (), 60.0, (OR,)),
    ],
)
def test_schedule_union(
    codes: tuple[str, ...],
    minor: bool,
    misleading: bool,
    at_start: str | None,
    every: float | None,
    every_laws: tuple[str, ...],
    reminder: float | None,
    rem_laws: tuple[str, ...],
) -> None:
    c = compliance_for(codes, minor=minor, misleading_context=misleading)
    assert c.disclosure_at_start == at_start
    assert (c.disclosure_every.minutes if c.disclosure_every else None) == every
    assert (c.disclosure_every.laws if c.disclosure_every else ()) == every_laws
    assert (c.reminder_every.minutes if c.reminder_every else None) == reminder
    assert (c.reminder_every.laws if c.reminder_every else ()) == rem_laws


@pytest.mark.parametrize(
    ("codes", "crisis"),
    [((), None), ((NY,), "refer"), ((OR,), "interrupt"), ((NY, OR), "interrupt"), ((EU,), None)],
)
def test_the_strictest_crisis_behaviour_wins(codes: tuple[str, ...], crisis: str | None) -> None:
    assert compliance_for(codes, minor=False).crisis == crisis


def test_content_bans_for_minors_only_and_per_law() -> None:
    adult = compliance_for([WA, CA], minor=False)
    minor = compliance_for([WA, CA], minor=True)
    assert adult.rule_laws("minor-safety.sexual") is None
    sexual = minor.rule_laws("minor-safety.sexual")
    assert sexual is not None and sexual.laws == (CA, WA)
    relationship = minor.rule_laws("minor-safety.relationship")
    assert relationship is not None and relationship.laws == (WA,)


def test_marking_and_reports() -> None:
    c = compliance_for([EU, CA, OR], minor=False)
    assert c.marking is not None and c.marking.laws == (EU,)
    assert [ref.code for ref, _ in c.reports] == [CA, OR]
    assert compliance_for([NY], minor=False).marking is None


def test_explain_names_the_law_and_section_of_each_duty() -> None:
    rows = compliance_for([NY, WA], minor=True).explain()
    every = next(r for r in rows if r["duty"] == "ai_disclosure_every")
    assert every["minutes"] == 60.0
    assert [ref["law"] for ref in every["required_by"]] == [WA]
    assert "§3(1)(a)" in every["required_by"][0]["cite"]
    assert {r["duty"] for r in rows} >= {"ai_disclosure_at_start", "crisis_protocol", "rule"}
