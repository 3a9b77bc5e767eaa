"""Prometheus metrics for the signals: levels, actions, crisis referrals. Never a user label.

Each :class:`SignalsMetrics` registers its collectors in one ``CollectorRegistry``; by default the
process-wide ``prometheus_client.REGISTRY`` (what ``persona-mw serve`` exposes on ``/metrics``),
shared through :meth:`SignalsMetrics.default` because a registry refuses the same name twice.
Tests pass their own registry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from persona_mw.compliance.reports import statutory_counts
from persona_mw.types import CallContext, Decision, LadderResult

from .dashboard import activity_counts

if TYPE_CHECKING:
    from .action_state import ActionStateStore
    from .compute import Signals

__all__ = ["SignalsMetrics", "SignalsMetricsStage", "count_crisis_referrals"]

_MINUTES = (5, 15, 30, 60, 90, 120, 180, 240, 360, 600)
_SHARE = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def count_crisis_referrals(decisions: Iterable[Decision]) -> int:
    """Crisis referrals in one call: decisions of the tier-1 crisis protocol (rule ids "crisis*")
    on this turn: the new message or the reply. A crisis message the app replays in later calls'
    history fired on its own turn and was counted there (``Decision.history``). One call counts
    at most once, however many crisis rules fired on it."""
    return 1 if any(d.rule_id.startswith("crisis") and not d.history for d in decisions) else 0


class SignalsMetrics:
    """The collectors. ``observe`` after each ladder run, ``observe_call`` after each call
    (calls themselves are counted by :class:`persona_mw.observability.CallMetrics`)."""

    _default: ClassVar[SignalsMetrics | None] = None

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "persona_mw"
    ) -> None:
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.requests = Counter(
            "dependence_requests",
            "Requests the dependence stage looked at",
            namespace=namespace,
            registry=reg,
        )
        self.session_minutes = Histogram(
            "dependence_session_minutes",
            "Continuous session minutes at each request",
            namespace=namespace,
            buckets=_MINUTES,
            registry=reg,
        )
        self.daily_minutes = Histogram(
            "dependence_daily_active_minutes",
            "The user's active minutes today, at each request",
            namespace=namespace,
            buckets=_MINUTES,
            registry=reg,
        )
        self.late_night_share = Histogram(
            "dependence_late_night_share",
            "Share of the user's messages sent 00:00-05:00 local",
            namespace=namespace,
            buckets=_SHARE,
            registry=reg,
        )
        self.watch = Counter(
            "dependence_watch_signals",
            "Signals over their watch threshold, by signal",
            ["signal"],
            namespace=namespace,
            registry=reg,
        )
        self.actions = Counter(
            "dependence_actions",
            "Ladder actions taken (first time per due time), by action",
            ["action"],
            namespace=namespace,
            registry=reg,
        )
        self.errors = Counter(
            "dependence_errors",
            "Requests whose signals could not be computed (store down)",
            namespace=namespace,
            registry=reg,
        )
        self.crisis_referrals = Counter(
            "crisis_referrals",
            "Calls on which the tier-1 crisis protocol referred the user",
            namespace=namespace,
            registry=reg,
        )

    @classmethod
    def default(cls) -> SignalsMetrics:
        """The process-wide instance on prometheus_client's default registry."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def observe(self, signals: Signals, result: LadderResult) -> None:
        self.requests.inc()
        self.session_minutes.observe(signals.current_session_minutes)
        self.daily_minutes.observe(signals.daily_active_minutes)
        self.late_night_share.observe(signals.late_night_share)
        for action in result.actions:
            if action.new:
                self.actions.labels(action=action.kind).inc()
                if action.kind == "log":
                    for name in result.watch:
                        self.watch.labels(signal=name).inc()

    def observe_call(self, ctx: CallContext) -> int:
        referrals = count_crisis_referrals(ctx.decisions)
        if referrals:
            self.crisis_referrals.inc(referrals)
        return referrals


class SignalsMetricsStage:
    """A finish stage: counts crisis referrals (after every stage has decided), and,
    with a ``counters`` store, adds referrals to the yearly count for the annual report and the
    per-law monthly figures for the statutory reports, and the dashboard's counts (actions fired
    per day, bound decisions per rule)."""

    name = "signals_metrics"

    def __init__(
        self, metrics: SignalsMetrics | None = None, *, counters: ActionStateStore | None = None
    ) -> None:
        self.metrics = metrics or SignalsMetrics.default()
        self.counters = counters

    async def __call__(self, ctx: CallContext) -> None:
        referrals = self.metrics.observe_call(ctx)
        if self.counters is None:
            return
        # per law and month, for the statutory reports (docs/compliance.md)
        counts = await statutory_counts(self.counters, ctx, referrals)
        # actions fired per day, bound decisions per rule, for the dashboard (docs/operators.md)
        counts.update(activity_counts(ctx))  # periods of their own: nothing to merge
        if referrals:
            counts[str(ctx.started_at.year)] = {"crisis_referrals": referrals}
        if counts:
            # one write for the call, under a token of its own: a retried write counts once
            await self.counters.add_counts(counts, token=uuid.uuid4().hex)
