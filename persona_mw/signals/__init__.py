"""Usage recording and dependence signals.

Live: the recorder (a finish stage) writes :class:`UsageEvent`\\ s to a usage store; the
:class:`DependenceStage` (an input stage) reads the store's per-day rollup of them
(:class:`UsageRollup`), computes :class:`Signals` and runs the response ladder. Offline,
``persona-mw signals`` feeds a file through the same functions.
"""

from ..types import ActionKind, DueAction, ErasedUsage, LadderResult, UsageEvent
from .action_state import ActionStateStore, MemoryActionStateStore, RedisActionStateStore
from .compute import (
    CUE_NAMES,
    DayStats,
    Signals,
    UsageDigest,
    compute_signals,
    percentile_of,
    with_percentiles,
)
from .config import STATUTORY_INTERVAL_MINUTES, SignalsConfig, load_signals_config
from .cues import Analyse, analyse_text, detect_cues, judge_cues
from .ladder import ACTION_KINDS, DisclosurePolicy, run_ladder
from .metrics import SignalsMetrics, SignalsMetricsStage, count_crisis_referrals
from .offline import EventLineError, analyse_events, parse_event_lines
from .recorder import UsageRecorder
from .report import aggregate_report, aggregate_text, user_report_html, user_report_text
from .stage import DependenceStage, UsageSource, disclosure_policy
from .usage_store import (
    DEFAULT_RETENTION_DAYS,
    MemoryUsageStore,
    RedisUsageStore,
    UsageRollup,
    UsageStore,
    open_usage_store,
)

__all__ = [
    "ACTION_KINDS",
    "CUE_NAMES",
    "DEFAULT_RETENTION_DAYS",
    "STATUTORY_INTERVAL_MINUTES",
    "ActionKind",
    "ActionStateStore",
    "Analyse",
    "DayStats",
    "DependenceStage",
    "DisclosurePolicy",
    "DueAction",
    "ErasedUsage",
    "EventLineError",
    "LadderResult",
    "MemoryActionStateStore",
    "MemoryUsageStore",
    "RedisActionStateStore",
    "RedisUsageStore",
    "Signals",
    "SignalsConfig",
    "SignalsMetrics",
    "SignalsMetricsStage",
    "UsageDigest",
    "UsageEvent",
    "UsageRecorder",
    "UsageRollup",
    "UsageSource",
    "UsageStore",
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
    "open_usage_store",
    "parse_event_lines",
    "percentile_of",
    "run_ladder",
    "user_report_html",
    "user_report_text",
    "with_percentiles",
]
