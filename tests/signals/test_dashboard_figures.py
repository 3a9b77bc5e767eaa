"""The dashboard's figures, from known timelines and counters: exact counts, and no ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from persona_mw.signals.config import SignalsConfig
from persona_mw.signals.dashboard import dashboard_html, dashboard_report
from persona_mw.signals.offline import analyse_events

from .timelines import session

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def _report() -> dict[str, object]:
    events = [
        # ada: 20 minutes yesterday and 40 today, one session each; kid: 3 minutes today
        *session("ada", NOW - timedelta(days=1, hours=2), 20, every=5),
        *session("ada", NOW - timedelta(hours=2), 40, every=5),
        *session("kid", NOW - timedelta(hours=1), 3, every=1, minor=True),
    ]
    cfg = SignalsConfig()
    signals = [s for s, _ in analyse_events(events, NOW, cfg).values()]
    counters = {
        "2026": {"crisis_referrals": 3},
        "dashboard:2026-03": {
            "action|break_reminder|2026-03-20": 2,
            "action|ai_disclosure|2026-03-19": 1,
            "action|log|2025-01-01": 7,  # outside the window: not drawn
            "decision|1|crisis.ideation|append": 3,
            "decision|2|profanity|redact": 5,
            "decision|2|team|rule|block": 1,
        },
        "dashboard:2026-02": {"decision|2|profanity|redact": 1},
        "statutory:2026-02": {"crisis_referrals|us-ca-sb243": 2, "calls_in_scope|us-ca-sb243": 9},
        "statutory:2026-03": {"disclosures_shown|us-ny-gbl-art47": 4},
    }
    return dashboard_report(signals, now=NOW, config=cfg, counters=counters)


def test_daily_figures_distributions_and_counters() -> None:
    report = _report()
    days = report["days"]
    assert isinstance(days, list) and days[-1] == "2026-03-20" and len(days) == 28
    assert report["active_users"][-2:] == [1, 2]  # type: ignore[index]
    assert report["messages"][-2:] == [5, 9 + 4]  # type: ignore[index]
    daily = {b["minutes"]: b["count"] for b in report["daily_minutes_histogram"]}  # type: ignore[attr-defined]
    assert sum(daily.values()) == 3 and daily["15-30"] == 1 and daily["30-60"] == 1
    assert report["actions"]["break_reminder"][-1] == 2  # type: ignore[index]
    assert report["actions"]["ai_disclosure"][-2] == 1  # type: ignore[index]
    assert sum(report["actions"]["log"]) == 0  # type: ignore[index]
    assert report["bounds"] == [
        {"tier": 2, "rule": "profanity", "action": "redact", "count": 6},
        {"tier": 1, "rule": "crisis.ideation", "action": "append", "count": 3},
        {"tier": 2, "rule": "team|rule", "action": "block", "count": 1},
    ]
    assert report["statutory"] == {
        "us-ca-sb243": {"2026-02": {"crisis_referrals": 2, "disclosures_shown": 0}},
        "us-ny-gbl-art47": {"2026-03": {"crisis_referrals": 0, "disclosures_shown": 4}},
    }
    summary = report["summary"]
    assert summary["users"] == 2 and summary["crisis_referrals"] == 3  # type: ignore[index]
    assert summary["known_minors_active_28d"] == 1  # type: ignore[index]


def test_no_user_id_reaches_the_figures_or_the_page() -> None:
    report = _report()
    for text in (json.dumps(report), dashboard_html(report)):
        assert "ada" not in text and "kid" not in text


def test_an_empty_deployment_says_so_instead_of_drawing_nothing() -> None:
    page = dashboard_html(dashboard_report([], now=NOW))
    assert page.count("Nothing recorded in this period.") == 10
    assert 'class="mark"' not in page
