"""Statutory reports: per-law monthly counts, read back for a date range; errors name the fix."""

from __future__ import annotations

from datetime import date

import pytest

from persona_mw.compliance.reports import report_html, statutory_report
from persona_mw.errors import PolicyError
from persona_mw.signals.action_state import MemoryActionStateStore


async def test_months_in_range_and_totals() -> None:
    store = MemoryActionStateStore()
    await store.incr("crisis_referrals|us-ca-sb243", "statutory:2027-01", 2)
    await store.incr("crisis_referrals|us-ca-sb243", "statutory:2027-03", 1)
    await store.incr("crisis_referrals|us-ny-gbl-art47", "statutory:2027-03", 5)
    await store.incr("crisis_referrals|us-ca-sb243", "statutory:2027-04", 9)
    out = await statutory_report(store.counters, "us-ca-sb243", date(2027, 1, 15), date(2027, 3, 2))
    assert list(out["months"]) == ["2027-01", "2027-02", "2027-03"]
    assert [m["crisis_referrals"] for m in out["months"].values()] == [2, 0, 1]
    assert out["totals"]["crisis_referrals"] == 3
    assert out["reporting_duties"][0]["recipient"] == "Office of Suicide Prevention"
    page = report_html(out)
    assert "<script" not in page and "2027-02" in page


async def test_bad_ranges_and_laws_are_refused() -> None:
    store = MemoryActionStateStore()
    with pytest.raises(ValueError, match="before"):
        await statutory_report(store.counters, "us-ca-sb243", date(2027, 2, 1), date(2027, 1, 1))
    with pytest.raises(PolicyError, match="unknown jurisdiction"):
        await statutory_report(store.counters, "us-xx", date(2027, 1, 1), date(2027, 1, 1))


async def test_distinct_users_are_not_summed_over_months() -> None:
    """``users_in_scope`` per month are distinct people; over a range they do not add up, so the
    total is the month's (one month), the year's (whole calendar years), or null."""
    store = MemoryActionStateStore()
    law = "us-ca-sb243"
    await store.incr(f"users_in_scope|{law}", "statutory:2027-01", 3)
    await store.incr(f"users_in_scope|{law}", "statutory:2027-02", 2)
    await store.incr(f"users_in_scope|{law}", "statutory:2027", 4)  # one user in both months
    one_month = await statutory_report(store.counters, law, date(2027, 1, 3), date(2027, 1, 9))
    assert one_month["totals"]["users_in_scope"] == 3
    year = await statutory_report(store.counters, law, date(2027, 1, 1), date(2027, 12, 31))
    assert year["totals"]["users_in_scope"] == 4
    assert year["years"] == {"2027": {"users_in_scope": 4}}
    part = await statutory_report(store.counters, law, date(2027, 1, 1), date(2027, 2, 28))
    assert part["totals"]["users_in_scope"] is None
    assert [m["users_in_scope"] for m in part["months"].values()] == [3, 2]
    page = report_html(part)
    assert "—" in page and "4 distinct users in scope" in page
