"""Statutory reports: non-identifying figures per law and month, from deployment-wide counters.

:func:`count_call` (run by the signals finish stage with a shared counter store, so every
worker's calls count once) adds, for each law that applied to the call, the crisis referral and
the disclosures and reminders shown, to hash ``statutory:<YYYY-MM>`` under
``<figure>|<law code>``. No user id, hash or text is ever part of a key or a value.
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

__all__ = ["FIGURES", "StatutoryCounters", "count_call", "report_html", "statutory_report"]

#: The figures counted per law and month.
FIGURES = ("crisis_referrals", "disclosures_shown", "reminders_shown", "calls_in_scope")
_SHOWN = {"ai_disclosure": "disclosures_shown", "statutory_reminder": "reminders_shown"}


def period_of(day: date) -> str:
    return f"statutory:{day.year:04d}-{day.month:02d}"


async def count_call(counters: StatutoryCounters, ctx: CallContext, referrals: int) -> None:
    """Count one finished call for every law that applied to it (nothing without a law)."""
    laws = ctx.policy.compliance.laws if ctx.policy is not None else ()
    if not laws:
        return
    shown = {
        _SHOWN[a.kind]
        for a in (ctx.signals.actions if ctx.signals else ())
        if a.new and a.kind in _SHOWN
    }
    period = period_of(ctx.started_at.date())
    for law in laws:
        await counters.incr(f"calls_in_scope|{law}", period)
        if referrals:
            await counters.incr(f"crisis_referrals|{law}", period, referrals)
        for figure in shown:
            await counters.incr(f"{figure}|{law}", period)


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
    duties = [d for d in law.duties if d.kind == "report"]
    return {
        "law": code,
        "name": law.name,
        "citation": law.citation,
        "reporting_duties": [d.model_dump(mode="json") for d in duties],
        "from": start.isoformat(),
        "to": end.isoformat(),
        "months": by_month,
        "totals": {f: sum(m[f] for m in by_month.values()) for f in FIGURES},
        "note": "Deployment-wide counts; no user id, hash or message text is stored or shown. "
        "calls_in_scope counts requests, not people.",
    }


def report_html(report: Mapping[str, Any]) -> str:
    """The report as a self-contained HTML page (no scripts, no external resources)."""
    esc = html.escape
    head = "".join(f"<th>{esc(f.replace('_', ' '))}</th>" for f in FIGURES)
    rows = "".join(
        f"<tr><td>{esc(month)}</td>" + "".join(f"<td>{figures[f]}</td>" for f in FIGURES) + "</tr>"
        for month, figures in report["months"].items()
    )
    totals = "".join(f"<td><b>{report['totals'][f]}</b></td>" for f in FIGURES)
    return (
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        f"<title>{esc(report['name'])}: statutory report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;"
        "border-bottom:1px solid #ccc;text-align:right}</style>"
        f"<h1>{esc(report['name'])}</h1><p>{esc(report['citation'])}. "
        f"{esc(report['from'])} to {esc(report['to'])}.</p>"
        f"<table><tr><th>month</th>{head}</tr>{rows}<tr><td>total</td>{totals}</tr></table>"
        f"<p>{esc(report['note'])}</p></html>\n"
    )
