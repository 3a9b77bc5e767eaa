"""Per-call metrics: what a real call through the middleware leaves in Prometheus.

Real LiteLLM against :class:`~persona_mw.testing.FakeOpenAIServer`, the real usage recorder
over the real memory and Redis usage stores; each test reads its own ``CollectorRegistry``
(or, for what is counted on the process-wide one, the change across the test).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from persona_mw import (
    CallContext,
    Decision,
    Middleware,
    Settings,
    UpstreamError,
    build_middleware,
    load_config,
)
from persona_mw.observability import (
    LABEL_VALUES_LIMIT,
    CallMetrics,
    MetricsStage,
    render_metrics,
)
from persona_mw.signals import UsageRecorder
from persona_mw.signals.usage_store import MemoryUsageStore, RedisUsageStore
from persona_mw.stores import open_store
from persona_mw.testing import FakeOpenAIServer, Fault

MODEL = "openai/fake"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def _kw(server: FakeOpenAIServer) -> dict[str, object]:
    return {"api_base": server.base_url, "api_key": "test-key", "num_retries": 0}


class FlagWord:
    """Input stage: a tier-2 "log" decision when the user says "flag"."""

    name = "flag_word"

    async def __call__(self, ctx: CallContext) -> None:
        if "flag" in ctx.user_text():
            ctx.decisions.append(
                Decision(rule_id="test.flag", tier=2, stage="input", detector="t", action="log")
            )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_each_call_is_counted_by_outcome_decision_and_stage(
    upstream: FakeOpenAIServer,
) -> None:
    registry = CollectorRegistry()
    mw = Middleware(input_stages=[FlagWord()], finish_stages=[MetricsStage(CallMetrics(registry))])
    await mw.acompletion(user="u", model=MODEL, messages=MESSAGES, **_kw(upstream))
    flagged = [{"role": "user", "content": "flag this"}]
    chunks = mw.astream(user="u", model=MODEL, messages=flagged, **_kw(upstream))
    async for _ in chunks:
        pass

    assert (
        value(registry, "persona_mw_calls_total", surface="python", outcome="ok", stream="false")
        == 1
    )
    assert (
        value(registry, "persona_mw_calls_total", surface="python", outcome="ok", stream="true")
        == 1
    )
    decision = {"rule": "test.flag", "tier": "2", "action": "log", "stage": "input"}
    assert value(registry, "persona_mw_bound_decisions_total", **decision) == 1
    for stage in ("profile", "flag_word", "model", "output", "total"):
        assert value(registry, "persona_mw_stage_duration_seconds_count", stage=stage) == 2, stage
    assert value(registry, "persona_mw_stage_duration_seconds_count", stage="first_token") == 1
    assert value(registry, "persona_mw_profile_store_errors_total") == 0


@pytest.mark.parametrize(
    ("fault", "kind"),
    [(Fault(status=503, times=5), "5xx"), (Fault(status=400, times=5), "4xx"),
     (Fault(delay=2.0, times=5), "timeout")],
)  # fmt: skip
async def test_upstream_errors_are_counted_once_per_call_by_model_and_kind(
    upstream: FakeOpenAIServer, fault: Fault, kind: str
) -> None:
    """Counted where LiteLLM's exception becomes ours (process-wide registry: read the change)."""
    labels = {"model": MODEL, "kind": kind}
    before = value(REGISTRY, "persona_mw_upstream_errors_total", **labels)
    upstream.inject(fault)
    with pytest.raises(UpstreamError):
        await Middleware().acompletion(
            user="u", model=MODEL, messages=MESSAGES, timeout=0.5, **_kw(upstream)
        )
    assert value(REGISTRY, "persona_mw_upstream_errors_total", **labels) == before + 1


async def test_an_unreachable_profile_store_is_counted() -> None:
    """A Redis store on a port nothing listens on: the call goes on with the default profile,
    and the failed read is counted."""
    from persona_mw_server.testing import free_port

    registry = CollectorRegistry()
    mw = Middleware(
        store=open_store(f"redis://127.0.0.1:{free_port()}/0"),
        finish_stages=[MetricsStage(CallMetrics(registry))],
        settings=Settings(profile_cache_ttl_s=0),
    )
    try:
        await mw.acompletion(user="u", model=MODEL, messages=MESSAGES, mock_response="hi")
    finally:
        await mw.aclose()
    assert value(registry, "persona_mw_profile_store_errors_total") == 1
    assert (
        value(registry, "persona_mw_calls_total", surface="python", outcome="ok", stream="false")
        == 1
    )


def _books(registry: CollectorRegistry) -> dict[str, float]:
    names = ("produced", "stored", "dropped")
    books = {n: value(registry, f"persona_mw_usage_events_{n}_total") for n in names}
    books["pending"] = value(registry, "persona_mw_usage_events_pending")
    books["writes"] = value(registry, "persona_mw_usage_write_batches_total")
    books["failures"] = value(registry, "persona_mw_usage_write_failures_total")
    return books


async def test_usage_books_are_exported_and_balance() -> None:
    registry = CollectorRegistry()
    recorder = UsageRecorder(MemoryUsageStore())
    mw = Middleware(finish_stages=[recorder, MetricsStage(CallMetrics(registry), usage=recorder)])
    for _ in range(3):
        await mw.acompletion(user="u", model=MODEL, messages=MESSAGES, mock_response="hi")
        books = _books(registry)
        assert books["produced"] == books["stored"] + books["dropped"] + books["pending"]
    await mw.aclose()  # flushes the recorder, then copies its books a last time
    books = _books(registry)
    assert books["produced"] == books["stored"] == 6, "two events per call, all written"
    assert books["dropped"] == books["pending"] == books["failures"] == 0
    assert books["writes"] >= 1


@pytest.mark.redis
async def test_write_failures_and_drops_are_exported_while_the_store_is_down() -> None:
    """A Redis usage store that cannot be reached: every batch write fails and is retried, the
    small queue overflows and drops; the exported books follow the recorder's own, and balance
    at every copy, including the ones the background timer makes without traffic."""
    from persona_mw_server.testing import free_port

    registry = CollectorRegistry()
    store = RedisUsageStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    recorder = UsageRecorder(store, queue_size=4, retry_initial_s=0.01, retry_max_s=0.05)
    stage = MetricsStage(CallMetrics(registry), usage=recorder)
    assert stage.books is not None
    stage.books.interval_s = 0.05
    mw = Middleware(finish_stages=[recorder, stage])
    for _ in range(5):
        await mw.acompletion(user="u", model=MODEL, messages=MESSAGES, mock_response="hi")
    await asyncio.sleep(0.5)  # the writer fails and retries; the timer copies the books
    books = _books(registry)
    assert books["produced"] == recorder.produced == 10
    assert books["dropped"] == recorder.dropped > 0
    assert books["failures"] >= 1
    assert books["pending"] == recorder.pending > 0
    assert books["produced"] == books["stored"] + books["dropped"] + books["pending"]
    await recorder.aclose(timeout_s=0.1)
    await store.aclose()


async def test_caller_supplied_label_values_are_capped() -> None:
    """A client choosing surfaces (or models) cannot add series without bound."""
    registry = CollectorRegistry()
    mw = Middleware(finish_stages=[MetricsStage(CallMetrics(registry))])
    for i in range(LABEL_VALUES_LIMIT + 5):
        await mw.acompletion(
            user="u", model=MODEL, messages=MESSAGES, mock_response="hi", surface=f"s{i}"
        )
    surfaces = {
        s.labels["surface"]
        for family in registry.collect()
        if family.name == "persona_mw_calls"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert len(surfaces) == LABEL_VALUES_LIMIT + 1
    other = value(registry, "persona_mw_calls_total", surface="other", outcome="ok", stream="false")
    assert other == 5


def test_names_follow_prometheus_conventions_and_no_label_names_a_user() -> None:
    registry = CollectorRegistry()
    CallMetrics(registry)
    for family in registry.collect():
        assert re.fullmatch(r"persona_mw_[a-z_]+", family.name), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total"), "prometheus_client appends _total"
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert not {"user", "user_id", "user_hash", "text"} & set(sample.labels)


async def test_the_wired_middleware_counts_on_the_process_registry() -> None:
    """``build_middleware`` puts the metrics stage last and hands it the usage recorder; with no
    multiprocess directory ``render_metrics`` serves this process's registry."""
    mw = build_middleware(load_config())
    assert [s.name for s in mw.finish_stages][-1] == "metrics"
    labels = {"surface": "wired-test", "outcome": "ok", "stream": "false"}
    await mw.acompletion(
        user="u", model=MODEL, messages=MESSAGES, mock_response="hi", surface="wired-test"
    )
    await mw.aclose()
    assert value(REGISTRY, "persona_mw_calls_total", **labels) == 1
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    assert b'persona_mw_calls_total{outcome="ok",stream="false",surface="wired-test"} 1.0' in body
    assert b"persona_mw_usage_events_stored_total" in body
