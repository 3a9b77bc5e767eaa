"""What OpenTelemetry tracing (persona_mw.tracing) costs per call, off and on.

    .venv/bin/python benchmarks/bench_tracing.py [--calls 300] [--rounds 5]

Side by side in one run, call by call, in rotating order so machine noise hits both alike:
  off  build_middleware() call with LiteLLM's mock_response, tracing off (the default)
  on   the same middleware with tracing on: SDK TracerProvider, SimpleSpanProcessor, in-memory
       exporter (so the figure includes making and exporting ~10 spans per call)
Added latency is the median of paired differences (on - off); figures are medians over rounds.
Then the hook alone: ``record_call(ctx)`` on a finished call's context, off vs on, per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

MESSAGES = [{"role": "user", "content": "How can I sleep better?"}]


async def main(calls: int, rounds: int) -> None:
    import logging

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from persona_mw import build_middleware, load_config, tracing
    from persona_mw.types import CallContext

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mw = build_middleware(load_config(settings={"hash_secret": "bench"}))

    async def one(on: bool, user: str) -> float:
        if on:
            tracing.instrument(provider)
        else:
            tracing.uninstrument()
        started = time.perf_counter()
        await mw.acompletion(user=user, model="openai/x", messages=MESSAGES, mock_response="ok")
        return (time.perf_counter() - started) * 1e3

    for i in range(50):  # warm-up
        await one(i % 2 == 0, f"warm-{i}")
    diffs, offs, spans = [], [], []
    for r in range(rounds):
        exporter.clear()
        round_diffs, round_off = [], []
        for i in range(calls):
            first = (i + r) % 2 == 0
            a = await one(first, f"u{i % 50}")
            b = await one(not first, f"u{i % 50}")
            on_ms, off_ms = (a, b) if first else (b, a)
            round_diffs.append(on_ms - off_ms)
            round_off.append(off_ms)
        spans.append(len(exporter.get_finished_spans()) / calls)
        diffs.append(statistics.median(round_diffs))
        offs.append(statistics.median(round_off))
    tracing.uninstrument()
    print(f"calls/round {calls}, rounds {rounds}")
    print(f"off: median call {statistics.median(offs):.3f} ms")
    print(
        f"on - off (paired): median {statistics.median(diffs) * 1e3:.0f} us per call, "
        f"{statistics.median(spans):.1f} spans per call"
    )

    # the hook alone, on a real finished context
    captured: list[CallContext] = []
    original = tracing.record_call

    def keep(ctx: CallContext) -> None:
        captured.append(ctx)

    import persona_mw.pipeline as pipeline

    pipeline.record_call = keep  # type: ignore[assignment]
    await mw.acompletion(user="hook", model="openai/x", messages=MESSAGES, mock_response="ok")
    pipeline.record_call = original
    ctx = captured[0]
    n = 20_000
    results = {}
    for label, on in (("off", False), ("on", True), ("off", False), ("on", True)):
        if on:
            tracing.instrument(provider)
        else:
            tracing.uninstrument()
        exporter.clear()
        started = time.perf_counter()
        for _ in range(n if not on else n // 20):
            tracing.record_call(ctx)
        per = (time.perf_counter() - started) / (n if not on else n // 20) * 1e9
        results.setdefault(label, []).append(per)
    tracing.uninstrument()
    print(
        f"record_call alone: off {min(results['off']):.0f} ns, on {min(results['on']) / 1e3:.0f} us"
    )
    await mw.aclose()
    provider.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
