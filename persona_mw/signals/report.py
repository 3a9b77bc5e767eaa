"""Operator reports: one user's signals and history (text, or a self-contained HTML page with
inline SVG charts that works offline), and non-identifying aggregates for an annual report.

Pure functions of computed :class:`~persona_mw.signals.compute.Signals`; the CLI loads the events.
The aggregate carries counts only: no user ids, no hashes, no per-user rows, so it can be handed
to a regulator (California SB 243 asks, from 2027-07-01, for the yearly number of crisis
referrals, without personal information).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from persona_mw.types import LadderResult

from .compute import CUE_NAMES, DayStats, Signals
from .config import SignalsConfig
from .ladder import ACTION_KINDS, run_ladder, watch_signals

__all__ = [
    "aggregate_report",
    "aggregate_text",
    "user_report_html",
    "user_report_text",
]

_CURRENT = (
    ("current_session_minutes", "min"),
    ("daily_active_minutes", "min"),
    ("messages_today", ""),
    ("sessions_today", ""),
    ("active_day_streak", "days"),
    ("days_active_28", "days"),
    ("late_night_share", ""),
    ("usage_trend", "/week"),
    ("mean_daily_minutes_28", "min"),
    ("percentile", ""),
    ("analysed_messages", ""),
    ("fear_of_addiction", ""),
    ("relationship_seeking_rate", ""),
    ("personalisation_exposure", ""),
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def user_report_text(
    signals: Signals,
    result: LadderResult,
    *,
    last_fired: Mapping[str, datetime] | None = None,
) -> str:
    """Current signals (with the ones over their watch threshold marked) and the daily history."""
    data = signals.to_dict()
    rows = [
        [
            name,
            _value(data[name]) + (f" {unit}" if unit and data[name] is not None else ""),
            "WATCH" if name in result.watch else "",
        ]
        for name, unit in _CURRENT
    ]
    rows += [
        [
            f"cue_rate.{cue}",
            _value(signals.cue_rates.get(cue, 0.0)),
            "WATCH" if f"{cue}_rate" in result.watch else "",
        ]
        for cue in CUE_NAMES
    ]
    minor = "  known minor" if signals.minor else ""
    parts = [
        f"user {signals.user_id}  now {signals.now.isoformat()}  local day "
        f"{signals.local_date.isoformat()} ({signals.tz}){minor}",
        "",
        _table(["signal", "value", ""], rows),
        "",
        "actions due now: " + (", ".join(result.kinds) or "none"),
    ]
    if last_fired:
        parts.append(
            "last fired: "
            + ", ".join(f"{k} {v.isoformat()}" for k, v in sorted(last_fired.items()))
        )
    history = [
        [
            d.day.isoformat(),
            f"{d.active_minutes:.1f}",
            str(d.messages),
            str(d.sessions),
            f"{d.late_night_share:.2f}",
        ]
        + [f"{d.cue_rate(c):.2f}" for c in CUE_NAMES]
        for d in signals.history
    ]
    parts += [
        "",
        "daily history (local days)",
        _table(
            ["day", "minutes", "msgs", "sessions", "late"] + [c[:12] for c in CUE_NAMES], history
        ),
    ]
    return "\n".join(parts) + "\n"


# -- HTML ---------------------------------------------------------------------------------------

_W, _H, _PAD = 720, 200, 36
_COLOURS = ("#3366cc", "#dc3912", "#ff9900", "#109618")


def _svg_bars(days: Sequence[DayStats], values: Sequence[float], title: str, unit: str) -> str:
    top = max([*values, 1e-9])
    n = max(len(values), 1)
    bw = (_W - 2 * _PAD) / n
    bars = []
    for i, (day, v) in enumerate(zip(days, values, strict=True)):
        h = (v / top) * (_H - 2 * _PAD)
        x = _PAD + i * bw
        bars.append(
            f'<rect x="{x:.1f}" y="{_H - _PAD - h:.1f}" width="{max(bw - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{_COLOURS[0]}"><title>{day.day.isoformat()}: '
            f"{v:.2f} {unit}</title></rect>"
        )
    return _svg_frame(title, f"{top:.2f}", days, "".join(bars))


def _svg_lines(days: Sequence[DayStats], series: Mapping[str, Sequence[float]], title: str) -> str:
    top = max([v for vs in series.values() for v in vs] + [1e-9])
    n = max(len(days) - 1, 1)
    paths, legend = [], []
    for k, (name, values) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        points = " ".join(
            f"{_PAD + i * (_W - 2 * _PAD) / n:.1f},{_H - _PAD - (v / top) * (_H - 2 * _PAD):.1f}"
            for i, v in enumerate(values)
        )
        paths.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        legend.append(
            f'<text x="{_PAD + 150 * k}" y="{_H - 4}" font-size="11" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    return _svg_frame(title, f"{top:.2f}", days, "".join(paths + legend), axis_labels=False)


def _svg_frame(
    title: str, top: str, days: Sequence[DayStats], body: str, *, axis_labels: bool = True
) -> str:
    first = days[0].day.isoformat() if days else ""
    last = days[-1].day.isoformat() if days else ""
    labels = (
        f'<text x="{_PAD}" y="{_H - _PAD + 14}" font-size="11">{first}</text>'
        f'<text x="{_W - _PAD}" y="{_H - _PAD + 14}" font-size="11" text-anchor="end">{last}</text>'
        if axis_labels
        else ""
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}">'
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#999"/>'
        f'<text x="{_PAD - 4}" y="{_PAD}" font-size="11" text-anchor="end">{top}</text>'
        f"{labels}{body}</svg></figure>"
    )


def user_report_html(signals: Signals, result: LadderResult) -> str:
    """A self-contained page (no scripts, no external resources): signals table and charts of
    daily minutes, late-night share and cue rates over the window."""
    days = signals.history
    text = html.escape(user_report_text(signals, result))
    charts = [
        _svg_bars(days, [d.active_minutes for d in days], "Daily active minutes", "min"),
        _svg_bars(days, [d.late_night_share for d in days], "Late-night share (00:00-05:00)", ""),
        _svg_lines(days, {c: [d.cue_rate(c) for d in days] for c in CUE_NAMES}, "Cue rates"),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Dependence signals: {html.escape(signals.user_id)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
        "pre{font-size:12px;background:#f6f6f6;padding:1em;overflow:auto}"
        "figcaption{font-weight:600;margin-top:1.5em}</style></head><body>"
        f"<h1>Dependence signals</h1>{''.join(charts)}<h2>Signals and history</h2>"
        f"<pre>{text}</pre></body></html>\n"
    )


# -- aggregate ----------------------------------------------------------------------------------


def aggregate_report(
    signals: Sequence[Signals],
    *,
    config: SignalsConfig | None = None,
    counters: Mapping[str, int] | None = None,
    period: str | None = None,
) -> dict[str, Any]:
    """Counts across users, none of which names anyone: how many users, how many active, how
    many known minors, how many over each watch threshold, how many with each action due, and the
    deployment-wide counters (crisis referrals) for ``period``."""
    cfg = config or SignalsConfig()
    active = [s for s in signals if s.days_active_28 > 0]
    watch_counts = dict.fromkeys(
        (
            "daily_active_minutes",
            "late_night_share",
            "active_day_streak",
            "days_active_28",
            "usage_trend",
            "percentile",
            "dependence_rate",
            "anthropomorphism_rate",
            "support_seeking_rate",
            "fear_of_addiction",
            "relationship_seeking_rate",
        ),
        0,
    )
    action_counts: dict[str, int] = dict.fromkeys(ACTION_KINDS, 0)
    for s in active:
        for name in watch_signals(s, cfg):
            watch_counts[name] = watch_counts.get(name, 0) + 1
        for kind in run_ladder(s, config=cfg).kinds:
            action_counts[kind] += 1
    minutes = sorted(s.mean_daily_minutes_28 for s in active)
    counts = dict(counters or {})
    return {
        "period": period,
        "as_of": signals[0].now.isoformat() if signals else None,
        "users": len(signals),
        "active_users_28d": len(active),
        "known_minors_active_28d": sum(1 for s in active if s.minor),
        "crisis_referrals": counts.pop("crisis_referrals", 0),
        "users_over_watch_threshold": watch_counts,
        "users_with_action_due": action_counts,
        "mean_daily_minutes_28": {
            "median": round(_quantile(minutes, 0.5), 2),
            "p90": round(_quantile(minutes, 0.9), 2),
        },
        "counters": counts,
    }


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def aggregate_text(report: Mapping[str, Any]) -> str:
    rows = [
        ["period", _value(report["period"])],
        ["as of", _value(report["as_of"])],
        ["users", str(report["users"])],
        ["active users (28 days)", str(report["active_users_28d"])],
        ["known minors active (28 days)", str(report["known_minors_active_28d"])],
        ["crisis referrals", str(report["crisis_referrals"])],
        ["median mean daily minutes", _value(report["mean_daily_minutes_28"]["median"])],
        ["p90 mean daily minutes", _value(report["mean_daily_minutes_28"]["p90"])],
    ]
    rows += [
        [f"users over watch: {k}", str(v)] for k, v in report["users_over_watch_threshold"].items()
    ]
    rows += [
        [f"users with action due: {k}", str(v)] for k, v in report["users_with_action_due"].items()
    ]
    rows += [[f"counter: {k}", str(v)] for k, v in report["counters"].items()]
    return _table(["measure", "count"], rows) + "\n"
