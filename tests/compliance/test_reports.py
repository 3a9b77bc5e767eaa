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
