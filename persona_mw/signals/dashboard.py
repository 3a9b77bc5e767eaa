"""The operator's dashboard: the whole deployment on one self-contained HTML page of charts.

Three parts, so the CLI (``persona-mw report --aggregate --html FILE``) and the server
(``GET /v1/admin/dashboard``) show the same page from the same figures:

- :func:`activity_counts` — for the finish stage
  (:class:`~persona_mw.signals.metrics.SignalsMetricsStage`, which adds them to the shared
  counter store once per call): the ladder actions a call fired, per day, and the bound
  decisions it made, per tier, rule and action, for the deployment-wide hash
  ``dashboard:<YYYY-MM>``. A call with neither writes nothing.
- :func:`load_dashboard` / :func:`dashboard_report` — the figures: per-day totals, distributions
  and counts, computed from every user's signals (the usage store's rollups) and the counters,
  beside :func:`~persona_mw.signals.report.aggregate_report`'s summary. Counts only: no user id,
  hash or text is part of the result.
- :func:`dashboard_html` — the page (:mod:`persona_mw.signals.dashboard_page`, re-exported
  here): inline SVG, no script and no external resource (its Content-Security-Policy forbids
  them), so it opens offline and can be mailed or archived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from persona_mw.compliance.reports import period_of

from .compute import CUE_NAMES, Signals, with_percentiles
from .config import SignalsConfig
from .dashboard_page import CONTENT_SECURITY_POLICY, dashboard_html
from .ladder import ACTION_KINDS
from .report import aggregate_report

if TYPE_CHECKING:
    from persona_mw.types import CallContext, UsageStore

    from .usage_store import UsageRollup


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "activity_counts",
    "dashboard_html",
    "dashboard_report",
    "load_dashboard",
]

#: Upper bounds (minutes) of the histogram buckets; the last bucket is open.
MINUTE_BUCKETS = (5, 15, 30, 60, 90, 120, 180, 240)
_STATUTORY_SHOWN = ("crisis_referrals", "disclosures_shown")


class _Counters(Protocol):
    async def counters(self, period: str) -> dict[str, int]: ...


def _month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def dashboard_period(day: date) -> str:
    """The counter hash of ``day``'s month (``dashboard:2026-12``)."""
    return f"dashboard:{_month(day)}"


def activity_counts(ctx: CallContext) -> dict[str, dict[str, int]]:
    """The dashboard's counts of ``ctx``: the ladder actions it fired (``action|<kind>|<day>``)
    and its bound decisions (``decision|<tier>|<rule id>|<action>``), in the month's dashboard
    hash (period -> counter -> amount). Rule ids and action kinds come from the
    configuration, never from the caller."""
    fired = [a.kind for a in (ctx.signals.actions if ctx.signals else ()) if a.new]
    if not fired and not ctx.decisions:
        return {}
    day = ctx.started_at.date()
    counts: dict[str, int] = {}
    for key in [f"action|{kind}|{day.isoformat()}" for kind in fired] + [
        f"decision|{d.tier}|{d.rule_id}|{d.action}" for d in ctx.decisions
    ]:
        counts[key] = counts.get(key, 0) + 1
    return {dashboard_period(day): counts}


# -- the figures --------------------------------------------------------------------------------


def _months_back(today: date, months: int) -> list[date]:
    out, year, month = [], today.year, today.month
    for _ in range(months):
        out.append(date(year, month, 1))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return out[::-1]


def _histogram(values: Sequence[float]) -> list[dict[str, Any]]:
    edges = (0, *MINUTE_BUCKETS)
    labels = [f"{lo}-{hi}" for lo, hi in zip(edges, MINUTE_BUCKETS, strict=False)]
    labels.append(f"{MINUTE_BUCKETS[-1]}+")
    counts = [0] * len(labels)
    for v in values:
        counts[next((i for i, hi in enumerate(MINUTE_BUCKETS) if v < hi), len(MINUTE_BUCKETS))] += 1
    return [{"minutes": label, "count": n} for label, n in zip(labels, counts, strict=True)]


def dashboard_report(
    signals: Sequence[Signals],
    *,
    now: datetime,
    config: SignalsConfig | None = None,
    counters: Mapping[str, Mapping[str, int]] | None = None,
    months: int = 12,
) -> dict[str, Any]:
    """Everything the dashboard draws, as JSON-ready counts. ``counters`` maps a period (the
    year ``"2026"``, ``statutory:2026-12``, ``dashboard:2026-12``) to its counter hash; missing
    periods count as zero. Days are each user's local days over the signals window."""
    cfg = config or SignalsConfig()
    counters = counters or {}
    today = now.date()
    days = [today - timedelta(days=n) for n in range(cfg.window_days - 1, -1, -1)]
    index = {d: i for i, d in enumerate(days)}
    zero = [0] * len(days)
    active, messages, analysed = list(zero), list(zero), list(zero)
    minutes: list[list[float]] = [[] for _ in days]
    late = list(zero)
    cues = {c: list(zero) for c in CUE_NAMES}
    day_minutes: list[float] = []
    session_minutes: list[float] = []
    for s in signals:
        for d in s.history:
            i = index.get(d.day)
            if d.messages == 0:
                continue
            day_minutes.append(d.active_minutes)
            if d.sessions:
                session_minutes.append(d.active_minutes / d.sessions)
            if i is None:
                continue
            active[i] += 1
            messages[i] += d.messages
            minutes[i].append(d.active_minutes)
            late[i] += d.late_night_messages
            analysed[i] += d.analysed_messages
            for c in CUE_NAMES:
                cues[c][i] += d.cues.get(c, 0)

    span = range(len(days))
    month_days = _months_back(today, months)
    dash: dict[str, int] = {}
    for m in month_days:
        for key, n in counters.get(dashboard_period(m), {}).items():
            dash[key] = dash.get(key, 0) + int(n)
    actions = {k: list(zero) for k in ACTION_KINDS}
    bounds: list[dict[str, Any]] = []
    for key, n in dash.items():
        kind, *rest = key.split("|")
        if kind == "action" and len(rest) == 2 and rest[0] in actions:
            i = index.get(date.fromisoformat(rest[1]))
            if i is not None:
                actions[rest[0]][i] += n
        elif kind == "decision" and len(rest) >= 3 and rest[0].isdigit():
            rule = "|".join(rest[1:-1])  # a rule id may itself contain "|"
            bounds.append({"tier": int(rest[0]), "rule": rule, "action": rest[-1], "count": n})
    bounds.sort(key=lambda b: (-b["count"], b["tier"], b["rule"], b["action"]))

    statutory: dict[str, dict[str, dict[str, int]]] = {}
    for m in month_days:
        for key, n in counters.get(period_of(m), {}).items():
            figure, _, law = key.partition("|")
            if figure in _STATUTORY_SHOWN and law:
                per_month = statutory.setdefault(law, {})
                per_month.setdefault(_month(m), dict.fromkeys(_STATUTORY_SHOWN, 0))[figure] += n
    ranked = with_percentiles(list(signals))
    year = str(now.year)
    return {
        "as_of": now.isoformat(),
        "summary": aggregate_report(
            ranked, config=cfg, counters=counters.get(year, {}), period=year
        ),
        "days": [d.isoformat() for d in days],
        "active_users": active,
        "messages": messages,
        "median_daily_minutes": [round(_median(v), 2) for v in minutes],
        "late_night_share": [round(late[i] / messages[i], 3) if messages[i] else 0.0 for i in span],
        "cue_rates": {
            c: [round(cues[c][i] / analysed[i], 3) if analysed[i] else 0.0 for i in span]
            for c in CUE_NAMES
        },
        "daily_minutes_histogram": _histogram(day_minutes),
        "session_minutes_histogram": _histogram(session_minutes),
        "actions": actions,
        "months": [_month(m) for m in month_days],
        "statutory": {law: statutory[law] for law in sorted(statutory)},
        "bounds": bounds,
    }


def _median(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def load_dashboard(
    usage: UsageStore[UsageRollup],
    counters: _Counters,
    *,
    now: datetime,
    config: SignalsConfig | None = None,
    months: int = 12,
) -> dict[str, Any]:
    """:func:`dashboard_report` from the stores: every user's rollup (O(days) each) and the
    counter hashes of the last ``months`` months."""
    cfg = config or SignalsConfig()
    computed = []
    for uid in await usage.users():
        rollup = await usage.rollup(uid)
        if rollup.events:
            computed.append(rollup.signals(now, cfg, user_id=uid))
    periods = [str(now.year)]
    for m in _months_back(now.date(), months):
        periods += [dashboard_period(m), period_of(m)]
    read = {p: await counters.counters(p) for p in periods}
    return dashboard_report(computed, now=now, config=cfg, counters=read, months=months)
