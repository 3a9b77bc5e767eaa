"""Operator metrics: Prometheus counters and latencies per call, deployment-wide.

:class:`CallMetrics` holds the per-call collectors; :class:`MetricsStage`, the last finish
stage, counts each call from its :class:`~persona_mw.types.CallContext` (outcome, bound
decisions, stage timings, profile-store fallbacks) and copies the usage recorder's books into
counters. Upstream errors are counted where they are made, in :mod:`persona_mw.llm`. No label
carries a user id or text: rule ids, stage names and models come from the configuration, and
values a caller passes (model, surface) are capped at :data:`LABEL_VALUES_LIMIT` per label.

:func:`render_metrics` is what ``/metrics`` serves: the process's registry, or, when
``PROMETHEUS_MULTIPROC_DIR`` is set (``persona-mw serve --workers N`` sets it), the sum over
every worker's files (prometheus_client's multiprocess mode). Every collector works in both
modes; the gauge declares how workers' values combine (``multiprocess_mode``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from typing import ClassVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .errors import UpstreamError, UpstreamTimeout
from .types import CallContext
from .types import RecorderBooks as UsageSource

__all__ = [
    "LABEL_VALUES_LIMIT",
    "MULTIPROC_ENV",
    "CallMetrics",
    "MetricsStage",
    "UsageBooks",
    "render_metrics",
]

#: prometheus_client's switch to multiprocess mode; it must be set before prometheus_client is
#: imported in the process that counts (``persona-mw serve --workers N`` sets it for its workers).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Distinct values one caller-supplied label (model, surface) may take per process; further
#: values are counted as ``"other"`` so a client cannot grow the series without bound.
LABEL_VALUES_LIMIT = 64

#: Seconds: from a cache hit (~50 µs) to a slow model (a minute).
_STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    10, 30, 60,
)  # fmt: skip


class _CappedLabel:
    """Passes the first ``limit`` distinct values through and maps any later one to "other"."""

    def __init__(self, limit: int = LABEL_VALUES_LIMIT) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(value)
        return value


class CallMetrics:
    """The per-call collectors, on one ``CollectorRegistry`` (by default prometheus_client's
    process-wide one, shared through :meth:`default`; tests pass their own)."""

    _default: ClassVar[CallMetrics | None] = None

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "persona_mw"
    ) -> None:
        reg = registry if registry is not None else REGISTRY
        self.registry = reg

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=reg)

        self.calls = counter(
            "calls",
            "Calls through the middleware, by surface, outcome and stream",
            ("surface", "outcome", "stream"),
        )
        self.decisions = counter(
            "bound_decisions",
            "Bound decisions (rules that fired), by rule id, tier, action and stage",
            ("rule", "tier", "action", "stage"),
        )
        self.upstream_errors = counter(
            "upstream_errors",
            "Model calls that failed, by model name and kind (timeout, 4xx, 5xx, other)",
            ("model", "kind"),
        )
        self.profile_store_errors = counter(
            "profile_store_errors",
            "Calls whose profile read failed (store unreachable): a stale cached copy or the "
            "default profile was used",
        )
        self.stage_seconds = Histogram(
            "stage_duration_seconds",
            "Time spent per step of a call (profile, each stage, model, first_token, output, "
            "the finish stages before metrics, total)",
            ("stage",),
            namespace=namespace,
            buckets=_STAGE_BUCKETS,
            registry=reg,
        )
        self.usage_produced = counter(
            "usage_events_produced", "Usage events handed to the recorder"
        )
        self.usage_stored = counter("usage_events_stored", "Usage events written to the store")
        self.usage_dropped = counter(
            "usage_events_dropped",
            "Usage events dropped (queue full, or a batch that cannot be written); each drop is "
            "also logged as usage.dropped",
        )
        self.usage_writes = counter("usage_write_batches", "Batches of usage events written")
        self.usage_write_failures = counter(
            "usage_write_failures",
            "Batch writes the usage store failed; each failed batch stays queued and is retried",
        )
        self.usage_pending = Gauge(
            "usage_events_pending",
            "Usage events queued, not yet written (summed over live workers)",
            namespace=namespace,
            registry=reg,
            # A worker's queue dies with it: only live workers' values count.
            multiprocess_mode="livesum",
        )
        self._model = _CappedLabel()
        self._surface = _CappedLabel()
        # Labelled children, looked up once: ``labels()`` costs as much as the count itself,
        # and a call observes ~10 stage timings.
        self._calls: dict[tuple[str, str, bool], Counter] = {}
        self._stages: dict[str, Histogram] = {}

    @classmethod
    def default(cls) -> CallMetrics:
        """The process-wide instance on prometheus_client's default registry."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def observe_call(self, ctx: CallContext) -> None:
        """Count one finished call from what its context holds."""
        key = (self._surface(ctx.surface), ctx.outcome, ctx.stream)
        calls = self._calls.get(key)
        if calls is None:
            calls = self._calls[key] = self.calls.labels(key[0], key[1], _flag(key[2]))
        calls.inc()
        for d in ctx.decisions:
            self.decisions.labels(d.rule_id, str(d.tier), d.action, d.stage).inc()
        if ctx.profile_source == "fallback":
            self.profile_store_errors.inc()
        for step, ms in ctx.timings_ms.items():
            self._stage(step).observe(ms / 1000.0)
        # The log's "total" is taken after every finish stage; ours, when the metrics stage runs.
        self._stage("total").observe(time.perf_counter() - ctx._t0)

    def _stage(self, step: str) -> Histogram:
        child = self._stages.get(step)
        if child is None:
            child = self._stages[step] = self.stage_seconds.labels(step)
        return child

    def observe_upstream_error(self, error: UpstreamError) -> None:
        self.upstream_errors.labels(self._model(error.model), _error_kind(error)).inc()


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _error_kind(error: UpstreamError) -> str:
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    status = error.status_code
    if status is not None and 400 <= status < 600:
        return f"{status // 100}xx"
    return "other"


class UsageBooks:
    """Copies a usage recorder's books into :class:`CallMetrics`, as increments since the last
    copy: the recorder keeps plain integers (it knows nothing of Prometheus), and only counters
    and gauges add up across workers.

    :meth:`sync` takes every number at one instant, so in one process the exported books
    balance at every scrape (``produced == stored + dropped + pending``). Summed over workers
    they balance once traffic settles: a scrape reads each worker's counter file and gauge file
    one after the other, so mid-traffic they can be a call's events apart. It runs on every
    scrape (:func:`render_metrics`), at close, after a call when no copy is due, and every
    :attr:`interval_s` seconds while events are queued, so what the background writer stores
    shows up without traffic.
    """

    interval_s = 0.5

    def __init__(self, source: UsageSource, metrics: CallMetrics) -> None:
        self.source = source
        self.metrics = metrics
        self._lock = threading.Lock()  # the Python API may call from several threads' loops
        self._seen = (0, 0, 0, 0, 0)
        self._timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        _OPEN_BOOKS.add(self)

    def sync(self) -> None:
        src, m = self.source, self.metrics
        with self._lock:
            now = (src.produced, src.stored, src.dropped, src.writes, src.write_failures)
            pending = src.pending
            counters = (m.usage_produced, m.usage_stored, m.usage_dropped, m.usage_writes,
                        m.usage_write_failures)  # fmt: skip
            for counter, value, seen in zip(counters, now, self._seen, strict=True):
                if value > seen:
                    counter.inc(value - seen)
            self._seen = now
            m.usage_pending.set(pending)

    def sync_soon(self) -> None:
        """Copy now unless a copy is already due; then every :attr:`interval_s` while events
        are queued. Under traffic that is one copy per interval, not one per call."""
        if self._timer is not None and not self._timer[0].is_closed():
            return
        self.sync()
        if self.source.pending:
            loop = asyncio.get_running_loop()
            self._timer = (loop, loop.call_later(self.interval_s, self._tick))

    def _tick(self) -> None:
        self._timer = None
        self.sync_soon()


_OPEN_BOOKS: weakref.WeakSet[UsageBooks] = weakref.WeakSet()


class MetricsStage:
    """The last finish stage: counts the call (:meth:`CallMetrics.observe_call`) and, given the
    usage recorder, copies its books (:class:`UsageBooks`). ``aclose`` copies them a last time,
    after the recorder (an earlier finish stage) has flushed."""

    name = "metrics"

    def __init__(
        self, metrics: CallMetrics | None = None, *, usage: UsageSource | None = None
    ) -> None:
        self.metrics = metrics or CallMetrics.default()
        self.books = UsageBooks(usage, self.metrics) if usage is not None else None

    async def __call__(self, ctx: CallContext) -> None:
        self.metrics.observe_call(ctx)
        if self.books is not None:
            self.books.sync_soon()

    async def aclose(self) -> None:
        if self.books is not None:
            self.books.sync()


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus text to serve on ``/metrics``, and its content type.

    With ``PROMETHEUS_MULTIPROC_DIR`` set: every worker's metrics (live and exited), summed by
    prometheus_client's ``MultiProcessCollector``; otherwise this process's registry. Usage books
    are copied first so the scrape sees this process's latest numbers.
    """
    for books in list(_OPEN_BOOKS):
        books.sync()
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
