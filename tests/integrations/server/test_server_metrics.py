"""`/metrics` of `persona-mw serve --workers 2` adds up: whichever worker answers the scrape, the
totals are the whole deployment's (prometheus_client's multiprocess mode), they only grow, and
they match the traffic sent with the real openai client.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner
from persona_mw_server.cli import serve
from persona_mw_server.testing import ServerProcess
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import KEYS, model_entry, write_config

from persona_mw.testing import FakeOpenAIServer, Fault
from tests.conftest import fresh_key_prefix

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PLAIN, STREAMED, CRISIS, FAILED = 30, 8, 4, 3  # PLAIN at least: see _traffic


def scrape(server: ServerProcess) -> Samples:
    """One scrape on a new connection, so either worker may answer it."""
    with httpx.Client(headers={"Connection": "close"}, timeout=10) as client:
        response = client.get(server.base_url + "/metrics")
    response.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@contextmanager
def deployment(redis_url: str, folder: Path) -> Iterator[tuple[ServerProcess, FakeOpenAIServer]]:
    """Two workers sharing a Redis store, routing model "fake" to a fake upstream; the run's
    metrics directory is made under ``folder``."""
    with fresh_key_prefix(redis_url) as prefix, FakeOpenAIServer() as upstream:
        path = write_config(
            folder / "persona.yaml",
            model_list=[model_entry(upstream.base_url)],
            store={"url": redis_url, "prefix": prefix},
            settings={"hash_secret": "test-secret"},
            server={"api_keys": KEYS.config()},
        )
        server = ServerProcess(
            path,
            args=["--workers", "2"],
            log_path=folder / "server.log",
            env={"TMPDIR": str(folder)},
        )
        server.start(timeout=180)  # two workers importing LiteLLM on a busy machine
        try:
            yield server, upstream
        finally:
            server.stop()


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url + "/v1",
        api_key=KEYS.app,
        max_retries=0,
        http_client=httpx.Client(headers={"Connection": "close"}, timeout=20),
    )


def _traffic(server: ServerProcess, upstream: FakeOpenAIServer) -> tuple[set[str], int]:
    """Sends the test's requests; returns the worker instances that answered and how many
    requests were sent in all: the kernel hands each new connection to either worker, not in
    turn (under load one took forty in a row), so plain requests go on until both answered."""
    instances: set[str] = set()
    client = _client(server)
    i = 0
    while i < PLAIN + CRISIS or (len(instances) < 2 and i < 300):
        text = "I want to die" if i < CRISIS else f"hello {i}"
        raw = client.chat.completions.with_raw_response.create(
            model="fake", user=f"user-{i % 7}", messages=[{"role": "user", "content": text}]
        )
        instances.add(raw.headers["x-persona-instance"])
        i += 1
    sent = i + STREAMED + FAILED
    for i in range(STREAMED):
        with client.chat.completions.with_streaming_response.create(
            model="fake",
            user=f"user-{i % 7}",
            messages=[{"role": "user", "content": "tell me more"}],
            stream=True,
        ) as response:
            instances.add(response.headers["x-persona-instance"])
            assert any(chunk.choices for chunk in response.parse())
    upstream.inject(Fault(status=400, times=FAILED))
    for _ in range(FAILED):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="fake", user="u", messages=[{"role": "user", "content": "x"}]
            )
    return instances, sent


def _counters(samples: Samples) -> Samples:
    """The series that may only grow: counters and histogram buckets, counts and sums."""
    return {
        key: v
        for key, v in samples.items()
        if key[0].endswith(("_total", "_bucket", "_count", "_sum"))
    }


@pytest.mark.redis
@pytest.mark.slow
def test_totals_across_two_workers_are_monotonic_and_match_the_traffic(
    redis_url: str, tmp_path: Path
) -> None:
    """Scraped all along the traffic and after it; then the run stops and removes its metrics
    directory."""
    with deployment(redis_url, tmp_path) as (server, upstream):
        (made,) = tmp_path.glob("persona-mw-metrics-*")
        scrapes, sent = _scrape_along(server, upstream)
        counted_there = any(made.glob("*.db"))
    _check(scrapes, sent)
    assert counted_there, "the workers count in the run's own directory"
    assert not made.exists(), "the run removes its metrics directory when it stops"


def _scrape_along(server: ServerProcess, upstream: FakeOpenAIServer) -> tuple[list[Samples], int]:
    """Scrapes while the traffic goes, then until the totals settle; returns every scrape and
    the number of chat requests sent."""
    scrapes: list[Samples] = []
    stop = threading.Event()

    def keep_scraping() -> None:
        while not stop.is_set():
            scrapes.append(scrape(server))
            time.sleep(0.02)

    scraper = threading.Thread(target=keep_scraping)
    scraper.start()
    try:
        instances, sent = _traffic(server, upstream)
    finally:
        stop.set()
        scraper.join()
    assert len(instances) == 2, "both workers must have served, or nothing is being added up"

    chat = {"route": "/v1/chat/completions", "method": "POST"}
    deadline = time.monotonic() + 15
    while True:  # a worker counts its HTTP request just after the last byte is sent
        scrapes.append(final := scrape(server))
        settled = (
            total(final, "persona_mw_server_requests_total", **chat) == sent
            and total(final, "persona_mw_usage_events_pending") == 0
            and total(final, "persona_mw_usage_events_stored_total")
            == total(final, "persona_mw_usage_events_produced_total")
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    scrapes.append(scrape(server))
    return scrapes, sent


def _check(scrapes: list[Samples], sent: int) -> None:
    assert len(scrapes) >= 10
    for earlier, later in itertools.pairwise(scrapes):
        grown = _counters(later)
        for key, before in _counters(earlier).items():
            assert grown.get(key, 0.0) >= before, f"{key} went down: {before} -> {grown.get(key)}"
        # A worker's counters and its pending gauge live in two files, read one after the
        # other: mid-traffic they may be a call apart, so the books balance exactly only once
        # settled (below); what was written or dropped can never exceed what was produced.
        produced, stored, dropped = (
            total(later, f"persona_mw_usage_events_{n}_total")
            for n in ("produced", "stored", "dropped")
        )
        assert stored + dropped <= produced
        assert total(later, "persona_mw_usage_events_pending") >= 0

    final = scrapes[-1]
    chat = {"route": "/v1/chat/completions", "method": "POST"}
    assert total(final, "persona_mw_server_requests_total", **chat) == sent
    assert total(final, "persona_mw_server_requests_total", status="200", **chat) == sent - FAILED
    assert total(final, "persona_mw_server_requests_total", status="400", **chat) == FAILED
    assert total(final, "persona_mw_calls_total", surface="server") == sent
    assert total(final, "persona_mw_calls_total", surface="server", stream="true") == STREAMED
    assert total(final, "persona_mw_calls_total", outcome="error") == FAILED
    assert total(final, "persona_mw_upstream_errors_total", model="fake", kind="4xx") == FAILED
    crisis = {"rule": "crisis.ideation", "tier": "1", "stage": "input"}
    assert total(final, "persona_mw_bound_decisions_total", **crisis) == CRISIS
    assert total(final, "persona_mw_crisis_referrals_total") == CRISIS
    assert total(final, "persona_mw_stage_duration_seconds_count", stage="total") == sent
    assert total(final, "persona_mw_stage_duration_seconds_count", stage="model") == sent - FAILED
    produced = total(final, "persona_mw_usage_events_produced_total")
    assert produced >= 2 * (sent - FAILED)
    assert total(final, "persona_mw_usage_events_stored_total") == produced
    assert total(final, "persona_mw_usage_events_pending") == 0
    assert total(final, "persona_mw_usage_events_dropped_total") == 0
    assert total(final, "persona_mw_server_open_streams") == 0
    assert total(final, "persona_mw_profile_store_errors_total") == 0


def test_an_operators_directory_with_old_files_is_refused(tmp_path: Path) -> None:
    """Files of an earlier run would be summed into this one's totals: a clear error instead."""
    path = write_config(tmp_path / "persona.yaml", store={"url": "redis://127.0.0.1:1/0"})
    old = tmp_path / "metrics"
    old.mkdir()
    (old / "counter_123.db").write_bytes(b"")
    result = CliRunner().invoke(
        serve,
        ["--config", str(path), "--workers", "2"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(old)},
    )
    assert result.exit_code != 0
    assert "holds metric files from an earlier run" in result.output
    assert "empty it" in result.output


@pytest.mark.redis
@pytest.mark.slow
def test_an_operators_directory_is_used_and_workers_leave_only_totals(
    redis_url: str, tmp_path: Path
) -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` set by the operator the workers count there, the run
    leaves the directory in place, and each worker marks itself dead when it stops: its gauge
    files (livesum) go, its counters stay."""
    own = tmp_path / "metrics"
    own.mkdir()
    path = write_config(
        tmp_path / "persona.yaml", store={"url": redis_url, "prefix": "pmwtest-own:"}
    )
    server = ServerProcess(
        path, args=["--workers", "2"], env={"PROMETHEUS_MULTIPROC_DIR": str(own)}
    )
    server.start(timeout=180)
    try:
        deadline = time.monotonic() + 120  # ready means one worker answers; wait for both
        while len(workers := {f.name.split("_")[-1] for f in own.glob("counter_*.db")}) < 2:
            assert time.monotonic() < deadline, sorted(f.name for f in own.iterdir())
            time.sleep(0.2)
        assert scrape(server)
    finally:
        server.stop()
    assert own.is_dir(), "an operator's directory is theirs to remove"
    left = {f.name for f in own.glob("gauge_livesum_*.db")}
    assert not {f"gauge_livesum_{w}" for w in workers} & left, left
    assert {f"counter_{w}" for w in workers} <= {f.name for f in own.glob("counter_*.db")}
