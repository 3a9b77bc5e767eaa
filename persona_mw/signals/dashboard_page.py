"""The operator's dashboard page (:func:`dashboard_html`): one self-contained HTML page of charts
for a :func:`~persona_mw.signals.dashboard.dashboard_report`. The SVG is drawn here; there is no
script and no external resource (:data:`CONTENT_SECURITY_POLICY` forbids them), so the page
opens offline and can be mailed or archived. It reads only the report: counts, never a user.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CONTENT_SECURITY_POLICY", "dashboard_html"]

_W, _H = 640, 240
_L, _R, _T, _B = 48, 12, 14, 34  # plot margins: left (y labels), right, top, bottom (x labels)
#: Okabe-Ito: distinguishable with every common colour-vision deficiency.
_PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")
#: The page loads nothing: no script, no font, no image from anywhere.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_esc = html.escape


def _nice(top: float) -> float:
    """The smallest 1/2/5 x 10^n at or above ``top`` (the y axis's upper end)."""
    if top <= 0:
        return 1.0
    step = 10 ** len(str(int(top))) / 100 if top >= 1 else 0.01
    while True:
        for m in (1, 2, 5):
            if m * step >= top:
                return m * step
        step *= 10


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.2g}"


def _frame(labels: Sequence[str], top: float, body: str, title: str) -> str:
    pw, ph = _W - _L - _R, _H - _T - _B
    grid = "".join(
        f'<line x1="{_L}" x2="{_W - _R}" y1="{_T + ph * (1 - f):.1f}" y2="{_T + ph * (1 - f):.1f}"'
        f' class="grid"/><text x="{_L - 6}" y="{_T + ph * (1 - f) + 4:.1f}" text-anchor="end">'
        f"{_fmt(top * f)}</text>"
        for f in (0, 0.5, 1)
    )
    n = len(labels)
    shown = sorted({0, n // 2, n - 1}) if n > 12 else range(n)
    xs = "".join(
        f'<text x="{_L + pw * (i + 0.5) / n:.1f}" y="{_H - _B + 16}" text-anchor="middle">'
        f"{_esc(labels[i])}</text>"
        for i in shown
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{_esc(title)}">{grid}{xs}{body}</svg>'
    )


def _figure(
    key: str, title: str, note: str, svg: str, legend: Sequence[str], *, named: bool = False
) -> str:
    items = "".join(
        f'<li><span style="background:{_PALETTE[i % len(_PALETTE)]}"></span>{_esc(name)}</li>'
        for i, name in enumerate(legend)
    )
    return (
        f'<figure class="chart" id="{key}"><figcaption>{_esc(title)}</figcaption>'
        f'<p class="note">{_esc(note)}</p>{svg}'
        + (f'<ul class="legend">{items}</ul>' if len(legend) > 1 or named else "")
        + "</figure>"
    )


def _empty(key: str, title: str, note: str) -> str:
    return (
        f'<figure class="chart empty" id="{key}"><figcaption>{_esc(title)}</figcaption>'
        f'<p class="note">{_esc(note)}</p><p class="nodata">Nothing recorded in this period.</p>'
        "</figure>"
    )


def _columns(
    key: str,
    title: str,
    note: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    named: bool = False,
) -> str:
    """Stacked columns, one per label; ``named`` shows the legend even for one series."""
    totals = [sum(vs[i] for vs in series.values()) for i in range(len(labels))]
    if not any(totals):
        return _empty(key, title, note)
    top = _nice(max(totals))
    pw, ph = _W - _L - _R, _H - _T - _B
    width = pw / len(labels)
    marks = []
    for i, label in enumerate(labels):
        y = float(_T + ph)
        for k, (name, values) in enumerate(series.items()):
            if not values[i]:
                continue
            h = ph * values[i] / top
            y -= h
            marks.append(
                f'<rect class="mark" x="{_L + i * width + width * 0.12:.1f}" y="{y:.1f}" '
                f'width="{width * 0.76:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[k % len(_PALETTE)]}"><title>{_esc(label)}: {_esc(name)} '
                f"{_fmt(values[i])}</title></rect>"
            )
    svg = _frame(labels, top, "".join(marks), title)
    return _figure(key, title, note, svg, list(series), named=named)


def _lines(
    key: str, title: str, note: str, labels: Sequence[str], series: Mapping[str, Sequence[float]]
) -> str:
    """One line per series, a dot per point (hover for the value)."""
    values = [v for vs in series.values() for v in vs]
    if not any(values):
        return _empty(key, title, note)
    top = _nice(max(values))
    pw, ph = _W - _L - _R, _H - _T - _B
    n = len(labels)
    marks = []
    for k, (name, vs) in enumerate(series.items()):
        colour = _PALETTE[k % len(_PALETTE)]
        points = [(_L + pw * (i + 0.5) / n, _T + ph * (1 - v / top)) for i, v in enumerate(vs)]
        marks.append(
            f'<polyline class="mark" fill="none" stroke="{colour}" stroke-width="2" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            + '"/>'
        )
        marks += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>'
            f"{_esc(labels[i])}: {_esc(name)} {_fmt(vs[i])}</title></circle>"
            for i, (x, y) in enumerate(points)
        ]
    return _figure(key, title, note, _frame(labels, top, "".join(marks), title), list(series))


def _bars(key: str, title: str, note: str, rows: Sequence[tuple[str, float, int]]) -> str:
    """Horizontal bars, one per row (label, value, colour index), longest first."""
    if not rows:
        return _empty(key, title, note)
    top = _nice(max(v for _, v, _ in rows))
    row_h, label_w = 22, 300
    height = row_h * len(rows) + 8
    marks = []
    for i, (label, value, colour) in enumerate(rows):
        y = 4 + i * row_h
        w = (_W - label_w - 50) * value / top
        marks.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_esc(label)}</text>'
            f'<rect class="mark" x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="16" '
            f'fill="{_PALETTE[colour % len(_PALETTE)]}"><title>{_esc(label)}: {_fmt(value)}'
            f'</title></rect><text x="{label_w + w + 4:.1f}" y="{y + 15}">{_fmt(value)}</text>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-label="{_esc(title)}">{"".join(marks)}</svg>'
    )
    return _figure(key, title, note, svg, [])


def _tiles(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    tiles = [
        ("users", s["users"]),
        ("active users, 28 days", s["active_users_28d"]),
        ("known minors active", s["known_minors_active_28d"]),
        ("crisis referrals this year", s["crisis_referrals"]),
        ("median mean daily minutes", s["mean_daily_minutes_28"]["median"]),
        ("p90 mean daily minutes", s["mean_daily_minutes_28"]["p90"]),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><b>{_esc(str(v))}</b><span>{_esc(k)}</span></div>' for k, v in tiles
        )
        + "</div>"
    )


def _per_law(report: Mapping[str, Any], figure: str) -> dict[str, list[int]]:
    """One statutory figure per law, month by month (0 where a month recorded none)."""
    months = report["months"]
    return {
        law: [per_month.get(m, {}).get(figure, 0) for m in months]
        for law, per_month in report["statutory"].items()
    }


def dashboard_html(report: Mapping[str, Any]) -> str:
    """The page for a :func:`~persona_mw.signals.dashboard.dashboard_report`: summary tiles and
    one chart per question."""
    days = [d[5:] for d in report["days"]]  # MM-DD
    months = report["months"]
    tiers = {1: "tier 1 (law)", 2: "tier 2 (deployer)", 3: "tier 3 (user)"}
    bound_rows = [
        (f"{tiers.get(b['tier'], b['tier'])} · {b['rule']} · {b['action']}", b["count"], b["tier"])
        for b in report["bounds"][:25]
    ]
    charts = [
        _columns(
            "active-users",
            "Active users per day",
            "users who sent at least one message that (local) day",
            days,
            {"active users": report["active_users"]},
        ),
        _columns(
            "messages",
            "Messages per day",
            "user messages, all users",
            days,
            {"messages": report["messages"]},
        ),
        _columns(
            "daily-minutes",
            "Daily active minutes",
            "how many user-days fall in each "
            "range of active minutes (days with at least one message)",
            [b["minutes"] for b in report["daily_minutes_histogram"]],
            {"user-days": [b["count"] for b in report["daily_minutes_histogram"]]},
        ),
        _columns(
            "session-minutes",
            "Session length",
            "average session length (minutes) of each user-day: active minutes / sessions",
            [b["minutes"] for b in report["session_minutes_histogram"]],
            {"user-days": [b["count"] for b in report["session_minutes_histogram"]]},
        ),
        _lines(
            "signal-levels",
            "Signal levels per day",
            "share of the day's user messages: "
            "late-night (00:00-05:00 local) and each dependence cue",
            days,
            {
                "late-night share": report["late_night_share"],
                **{f"{c.replace('_', ' ')} cue": v for c, v in report["cue_rates"].items()},
            },
        ),
        _lines(
            "median-minutes",
            "Median daily minutes per active user",
            "of users active that day",
            days,
            {"median minutes": report["median_daily_minutes"]},
        ),
        _columns(
            "ladder-actions",
            "Ladder actions per day",
            "actions the dependence ladder took (first time per due time)",
            days,
            {k.replace("_", " "): v for k, v in report["actions"].items() if any(v)},
        ),
        _columns(
            "crisis-referrals",
            "Crisis referrals per month and jurisdiction",
            "calls on which the tier-1 crisis protocol referred the user, by law in force",
            months,
            _per_law(report, "crisis_referrals"),
            named=True,
        ),
        _columns(
            "disclosures",
            "AI disclosures per month and jurisdiction",
            "disclosures shown, by law in force",
            months,
            _per_law(report, "disclosures_shown"),
            named=True,
        ),
        _bars(
            "bound-decisions",
            "Bound decisions per rule, tier and action",
            f"over the last {len(months)} months, most frequent first",
            bound_rows,
        ),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>persona_mw: deployment dashboard</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1400px;color:#222;"
        "padding:0 1em}h1{font-size:1.4em;margin:0}.sub{color:#666;margin:.2em 0 1em}"
        ".tiles{display:flex;flex-wrap:wrap;gap:.8em;margin-bottom:1em}.tile{background:#f3f6fa;"
        "border-radius:6px;padding:.6em 1em;min-width:9em}.tile b{display:block;font-size:1.6em}"
        ".tile span{color:#555;font-size:.85em}.grid-2{display:grid;gap:1em;"
        "grid-template-columns:repeat(auto-fit,minmax(520px,1fr))}.chart{margin:0;border:1px "
        "solid #e3e3e3;border-radius:6px;padding:.8em}figcaption{font-weight:600}"
        ".note{color:#666;font-size:.8em;margin:.2em 0 .4em}svg{width:100%;height:auto;"
        "font-size:11px;fill:#444}.grid{stroke:#e6e6e6}.legend{list-style:none;padding:0;"
        "margin:.3em 0 0;font-size:.8em;display:flex;flex-wrap:wrap;gap:.8em}.legend span"
        "{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}"
        ".nodata{color:#999;font-style:italic}</style></head><body>"
        "<h1>persona_mw: deployment dashboard</h1>"
        f'<p class="sub">As of {_esc(report["as_of"])}. Counts only: no user id, hash or '
        "message text is on this page.</p>"
        f'{_tiles(report)}<div class="grid-2">{"".join(charts)}</div></body></html>\n'
    )
