"""Statutory reports: non-identifying figures per law and month, from deployment-wide counters.

:func:`statutory_counts` (run by the signals finish stage with a shared counter store, so every
worker's calls count, each once) gives, for each law that applied to the call, the crisis
referral made on this turn, the disclosures and reminders shown, the call, and the user the
first time they call in that law's scope this month (and this year), for hash
``statutory:<YYYY-MM>`` (and ``statutory:<YYYY>``) under ``<figure>|<law code>``. No user
id, hash or text is ever part of a counter key or value: which users were already counted is a
mark in each user's own state
(:meth:`~persona_mw.signals.action_state.ActionStateStore.first_seen`), erased with them.
:func:`statutory_report` reads them back for one law and a date range (``persona-mw report
--statutory``).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from ..types import StatutoryCounters
from .law import jurisdiction

if TYPE_CHECKING:
    from ..types import CallContext

__all__ = ["FIGURES", "StatutoryCounters", "report_html", "statutory_counts", "statutory_report"]

#: The figures counted per law and month.
FIGURES = (
    "crisis_referrals",
    "disclosures_shown",
    "reminders_shown",
    "users_in_scope",
    "calls_in_scope",
)
#: Figures that are not sums: distinct users of a month do not add up to those of a range.
_DISTINCT = frozenset({"users_in_scope"})
_SHOWN = {"ai_disclosure": "disclosures_shown", "statutory_reminder": "reminders_shown"}


def period_of(day: date) -> str:
    return f"statutory:{day.year:04d}-{day.month:02d}"


def year_of(day: date) -> str:
    return f"statutory:{day.year:04d}"


async def statutory_counts(
    counters: StatutoryCounters, ctx: CallContext, referrals: int
) -> dict[str, dict[str, int]]:
    """What one finished call adds to the figures of every law that applied to it: period ->
    counter -> amount (nothing without a law). Marks the user in scope of each law for the
    period (:meth:`~StatutoryCounters.first_seen`) to count distinct users; the caller adds
    the counts, once (:meth:`~StatutoryCounters.add_counts`)."""
    laws = ctx.policy.compliance.laws if ctx.policy is not None else ()
    if not laws:
        return {}
    shown = {
        _SHOWN[a.kind]
        for a in (ctx.signals.actions if ctx.signals else ())
        if a.new and a.kind in _SHOWN
    }
    day = ctx.started_at.date()
    period, year = period_of(day), year_of(day)
    # one mark per law and granularity, holding the period last counted: it never piles up
    spans = {"month": period, "year": year}
    fresh = await counters.first_seen(
        ctx.user_id, {f"{law}|{span}": p for law in laws for span, p in spans.items()}
    )
    counts: dict[str, dict[str, int]] = {period: {}}
    month = counts[period]
    for law in laws:
        month[f"calls_in_scope|{law}"] = 1
        if referrals:
            month[f"crisis_referrals|{law}"] = referrals
        for figure in shown:
            month[f"{figure}|{law}"] = 1
        for span, p in spans.items():
            if f"{law}|{span}" in fresh:
                counts.setdefault(p, {})[f"users_in_scope|{law}"] = 1
    return counts


def _months(start: date, end: date) -> list[date]:
    months, current = [], date(start.year, start.month, 1)
    while current <= end:
        months.append(current)
        current = date(current.year + (current.month == 12), current.month % 12 + 1, 1)
    return months


async def statutory_report(
    read: Callable[[str], Awaitable[Mapping[str, int]]], code: str, start: date, end: date
) -> dict[str, Any]:
    """The figures for law ``code`` per calendar month from ``start`` to ``end`` (whole months):
    ``read(period)`` is the counter store's ``counters``. Counts only."""
    law = jurisdiction(code)
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    by_month: dict[str, dict[str, int]] = {}
    for month in _months(start, end):
        counts = await read(period_of(month))
        by_month[f"{month.year:04d}-{month.month:02d}"] = {
            figure: int(counts.get(f"{figure}|{code}", 0)) for figure in FIGURES
        }
    years: dict[str, dict[str, int]] = {}
    for year in range(start.year, end.year + 1):
        counts = await read(year_of(date(year, 1, 1)))
        years[f"{year:04d}"] = {"users_in_scope": int(counts.get(f"users_in_scope|{code}", 0))}
    totals: dict[str, int | None] = {
        f: sum(m[f] for m in by_month.values()) for f in FIGURES if f not in _DISTINCT
    }
    totals["users_in_scope"] = _distinct_users(by_month, years, start, end)
    duties = [d for d in law.duties if d.kind == "report"]
    return {
        "law": code,
        "name": law.name,
        "citation": law.citation,
        "reporting_duties": [d.model_dump(mode="json") for d in duties],
        "from": start.isoformat(),
        "to": end.isoformat(),
        "months": by_month,
        "years": years,
        "totals": {f: totals[f] for f in FIGURES},
        "note": "Deployment-wide counts; no user id, hash or message text is stored or shown. "
        "users_in_scope counts distinct people per month (and per calendar year under "
        "'years'); its total is given when the range is one month or whole calendar years, "
        "else null. calls_in_scope counts requests. A crisis referral is counted on the turn "
        "it was made, not again when the conversation is replayed.",
    }


def _distinct_users(
    by_month: Mapping[str, Mapping[str, int]],
    years: Mapping[str, Mapping[str, int]],
    start: date,
    end: date,
) -> int | None:
    """Distinct users over the range, where the counts can say it: one month, or whole
    calendar years (a person in two years counts in each, as a yearly report has it)."""
    if (start.year, start.month) == (end.year, end.month):
        return next(iter(by_month.values()))["users_in_scope"]
    if (start.month, start.day, end.month, end.day) == (1, 1, 12, 31):
        return sum(y["users_in_scope"] for y in years.values())
    return None


def report_html(report: Mapping[str, Any]) -> str:
    """The report as a self-contained HTML page (no scripts, no external resources)."""
    esc = html.escape
    head = "".join(f"<th>{esc(f.replace('_', ' '))}</th>" for f in FIGURES)
    rows = "".join(
        f"<tr><td>{esc(month)}</td>" + "".join(f"<td>{figures[f]}</td>" for f in FIGURES) + "</tr>"
        for month, figures in report["months"].items()
    )
    totals = "".join(
        f"<td><b>{'—' if report['totals'][f] is None else report['totals'][f]}</b></td>"
        for f in FIGURES
    )
    years = "".join(
        f"<li>{esc(year)}: {figures['users_in_scope']} distinct users in scope</li>"
        for year, figures in report.get("years", {}).items()
    )
    return (
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        f"<title>{esc(report['name'])}: statutory report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;"
        "border-bottom:1px solid #ccc;text-align:right}</style>"
        f"<h1>{esc(report['name'])}</h1><p>{esc(report['citation'])}. "
        f"{esc(report['from'])} to {esc(report['to'])}.</p>"
        f"<table><tr><th>month</th>{head}</tr>{rows}<tr><td>total</td>{totals}</tr></table>"
        f"<p>Calendar years (whole year):</p><ul>{years}</ul>"
        f"<p>{esc(report['note'])}</p></html>\n"
    )
