"""The public names of persona_mw.signals are pinned: removing one is a breaking change."""

from __future__ import annotations

import persona_mw.signals as signals

MINE = {
    "ACTION_KINDS",
    "CUE_NAMES",
    "STATUTORY_INTERVAL_MINUTES",
    "ActionKind",
    "ActionStateStore",
    "Analyse",
    "DayStats",
    "DependenceStage",
    "DisclosurePolicy",
    "DueAction",
    "EventLineError",
    "LadderResult",
    "MemoryActionStateStore",
    "RedisActionStateStore",
    "Signals",
    "SignalsConfig",
    "SignalsMetrics",
    "SignalsMetricsStage",
    "UsageDigest",
    "UsageEvent",
    "UsageRollup",
    "UsageSource",
    "aggregate_report",
    "aggregate_text",
    "analyse_events",
    "analyse_text",
    "compute_signals",
    "count_crisis_referrals",
    "detect_cues",
    "disclosure_policy",
    "judge_cues",
    "load_signals_config",
    "parse_event_lines",
    "percentile_of",
    "run_ladder",
    "user_report_html",
    "user_report_text",
    "with_percentiles",
}


def test_signals_exports() -> None:
    assert set(signals.__all__) >= MINE
    for name in signals.__all__:
        assert hasattr(signals, name), name
