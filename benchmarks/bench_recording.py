"""Usage recording: throughput into a real Redis, and what the recorder adds to a request.

Starts its own redis-server on a free loopback port (no persistence), so it never touches a
database it did not create. Side by side in one run, medians over repeated rounds:

1. Throughput, events/s from one process: the store alone (``RedisUsageStore.append`` of
   ready batches), and the whole recorder (``await recorder(ctx)`` for every request, then
   ``flush``), with its ``usage.recorded`` log events dropped by level and rendered as JSON lines
   to /dev/null (what a deployment pays for them).
2. Added latency of the finish stage: ``await recorder(ctx)`` against a no-op finish stage, per
   call (medians and p99 of per-call times), with the writer draining into Redis meanwhile.
3. Added latency through the middleware: ``Middleware.acompletion`` with a LiteLLM mock reply,
   with the recorder vs with a no-op finish stage, interleaved rounds.

Run: .venv/bin/python benchmarks/bench_recording.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import redis
import structlog

from persona_mw.observability import configure_logging
from persona_mw.profile import Profile
from persona_mw.signals import UsageEvent
from persona_mw.signals.recorder import UsageRecorder
from persona_mw.signals.usage_store import RedisUsageStore
from persona_mw.types import CallContext

USERS = 1000
PROFILES = [Profile(user_id=f"user-{i}", timezone="Europe/Berlin") for i in range(USERS)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def context(n: int) -> CallContext:
    profile = PROFILES[n % USERS]
    messages = [{"role": "user", "content": "how do I make my sourdough less dense?"}]
    ctx = CallContext(
        request_id=f"r{n}",
        user_id=profile.user_id,
        user_hash="0123456789abcdef",
        model="m",
        messages=messages,
        prompt_messages=messages,
        stream=False,
        llm_kwargs={},
        profile=profile,
        profile_source="store",
        started_at=datetime.now(UTC),
    )
    ctx.output_text = "Give it a longer bulk ferment and a wetter dough."
    ctx.prompt_tokens, ctx.completion_tokens = 40, 12
    ctx.exposure.parts.update({"style"})
    return ctx


class NoOpStage:
    name = "noop"

    async def __call__(self, ctx: CallContext) -> None:
        return None


def quiet_logs() -> None:
    configure_logging(level=logging.WARNING, stream=open(os.devnull, "w"))  # noqa: SIM115


def json_logs() -> None:
    configure_logging(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115


async def store_throughput(url: str, prefix: str, events: int, batch: int) -> float:
    store = RedisUsageStore(url, prefix=prefix)
    now = datetime.now(UTC)
    batches = [
        [
            UsageEvent(f"user-{i % USERS}", now, "user", request_id=f"{prefix}{i}", tokens=40)
            for i in range(start, start + batch)
        ]
        for start in range(0, events, batch)
    ]
    started = time.perf_counter()
    for chunk in batches:
        await store.append(chunk)
    elapsed = time.perf_counter() - started
    await store.aclose()
    return events / elapsed


async def recorder_throughput(url: str, prefix: str, requests: int) -> float:
    recorder = UsageRecorder(
        RedisUsageStore(url, prefix=prefix), queue_size=4 * requests, batch_size=500
    )
    contexts = [context(n) for n in range(requests)]
    started = time.perf_counter()
    for n, ctx in enumerate(contexts):
        await recorder(ctx)
        if n % 200 == 0:
            await asyncio.sleep(0)  # a server yields between requests; let the writer run
    await recorder.flush()
    elapsed = time.perf_counter() - started
    assert recorder.stored == 2 * requests and recorder.dropped == 0
    await recorder.aclose()
    return 2 * requests / elapsed


async def stage_latency(stage: Any, calls: int) -> list[float]:
    """Per-call seconds of ``await stage(ctx)``; the loop yields every 50 calls so the recorder's
    writer really drains into Redis while we measure."""
    contexts = [context(n) for n in range(calls)]
    times = []
    for n, ctx in enumerate(contexts):
        started = time.perf_counter()
        await stage(ctx)
        times.append(time.perf_counter() - started)
        if n % 50 == 0:
            await asyncio.sleep(0)
    return times


async def middleware_latency(finish: Any, calls: int) -> list[float]:
    from persona_mw.pipeline import Middleware

    mw = Middleware(finish_stages=[finish])
    messages = [{"role": "user", "content": "hello"}]
    times = []
    for n in range(calls):
        started = time.perf_counter()
        await mw.acompletion(
            user=f"user-{n % 50}", model="gpt-4o-mini", messages=messages, mock_response="hi"
        )
        times.append(time.perf_counter() - started)
    if isinstance(finish, UsageRecorder):
        await finish.flush()
    return times


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


async def main(rounds: int) -> None:
    server = OwnRedis()
    url = server.url
    try:
        print(f"redis-server 127.0.0.1:{server.port}; {rounds} rounds; medians of rounds\n")
        print("1. throughput, one process (events/s)")
        rows: dict[str, list[float]] = {
            "store.append, batches of 500": [],
            "recorder, logs filtered out": [],
            "recorder, usage.recorded as JSON": [],
        }
        for r in range(rounds):
            quiet_logs()
            rows["store.append, batches of 500"].append(
                await store_throughput(url, f"b{r}a:", 100_000, 500)
            )
            rows["recorder, logs filtered out"].append(
                await recorder_throughput(url, f"b{r}b:", 25_000)
            )
            json_logs()
            rows["recorder, usage.recorded as JSON"].append(
                await recorder_throughput(url, f"b{r}c:", 25_000)
            )
        base = statistics.median(rows["store.append, batches of 500"])
        for name, values in rows.items():
            med = statistics.median(values)
            spread = (max(values) - min(values)) / med * 100
            print(f"   {name:34s} {med:10,.0f} /s  x{med / base:4.2f}  spread {spread:3.0f} %")

        print("\n2. finish stage alone: await stage(ctx), 20,000 calls per round (µs)")
        quiet_logs()
        per: dict[str, list[list[float]]] = {"no-op stage": [], "UsageRecorder": []}
        for r in range(rounds):
            per["no-op stage"].append(await stage_latency(NoOpStage(), 20_000))
            recorder = UsageRecorder(
                RedisUsageStore(url, prefix=f"l{r}:"), queue_size=100_000, batch_size=500
            )
            per["UsageRecorder"].append(await stage_latency(recorder, 20_000))
            assert recorder.dropped == 0
            await recorder.aclose()
        for name, runs in per.items():
            med = statistics.median(statistics.median(t) for t in runs) * 1e6
            tail = statistics.median(p99(t) for t in runs) * 1e6
            print(f"   {name:16s} median {med:6.2f} µs   p99 {tail:7.2f} µs")

        print("\n3. through Middleware.acompletion (LiteLLM mock reply), 400 calls per round (ms)")
        mw_rows: dict[str, list[float]] = {"no-op finish stage": [], "UsageRecorder": []}
        await middleware_latency(NoOpStage(), 50)  # import litellm, warm caches
        for r in range(rounds):
            mw_rows["no-op finish stage"].append(
                statistics.median(await middleware_latency(NoOpStage(), 400))
            )
            recorder = UsageRecorder(RedisUsageStore(url, prefix=f"m{r}:"))
            mw_rows["UsageRecorder"].append(
                statistics.median(await middleware_latency(recorder, 400))
            )
            await recorder.aclose()
        base = statistics.median(mw_rows["no-op finish stage"])
        for name, values in mw_rows.items():
            med = statistics.median(values) * 1000
            print(f"   {name:20s} median {med:6.3f} ms  x{med / (base * 1000):5.3f}")
    finally:
        structlog.reset_defaults()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
