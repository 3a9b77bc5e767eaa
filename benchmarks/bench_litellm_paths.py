"""What LiteLLM itself costs, on the paths persona_mw uses, against the same local upstream.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/bench_litellm_paths.py

Side by side in one process, medians over rounds (the upstream is bench_server.py's fake, in
its own process):

- plain calls at 50 in flight, req/s: ``litellm.acompletion`` with the deployment's parameters
  (persona_mw's direct route) vs ``Router.acompletion`` over a one-deployment ``model_list``;
- streamed calls one at a time, p50 ms: the same request with raw ``httpx`` (the floor) vs
  ``litellm.acompletion(stream=True)`` read to the end.

Why: the server calls single deployments directly (docs/proxy.md, "Direct routes"), and at
concurrency 1 a streamed call's latency is mostly LiteLLM's own (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_server import start_fake

from persona_mw.llm import import_litellm

MESSAGES = [{"role": "user", "content": "How do I sleep better?"}]


async def throughput(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    for _ in range(concurrency):
        await call()
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def latency_p50(call: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(20):
        await call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(rounds: int, n: int) -> None:
    litellm = import_litellm()
    fake, upstream = start_fake()
    try:
        params = {"model": "openai/fake", "api_base": upstream, "api_key": "x"}
        router = litellm.Router(model_list=[{"model_name": "fake", "litellm_params": params}])

        async def direct() -> object:
            return await litellm.acompletion(messages=MESSAGES, **params)

        async def routed() -> object:
            return await router.acompletion(model="fake", messages=MESSAGES)

        async def litellm_stream() -> None:
            stream = await litellm.acompletion(messages=MESSAGES, stream=True, **params)
            async for _ in stream:
                pass

        async with httpx.AsyncClient() as client:

            async def raw_stream() -> None:
                body = {"model": "fake", "messages": MESSAGES, "stream": True}
                async with client.stream("POST", upstream + "/chat/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        pass

            results: dict[str, list[float]] = {}
            for round_no in range(1, rounds + 1):
                for name, value in (
                    ("plain c50 req/s: litellm.acompletion (direct route)",
                     await throughput(direct, n, 50)),
                    ("plain c50 req/s: Router.acompletion, one deployment",
                     await throughput(routed, n, 50)),
                    ("streamed c1 p50 ms: raw httpx", await latency_p50(raw_stream, n // 4)),
                    ("streamed c1 p50 ms: litellm.acompletion(stream=True)",
                     await latency_p50(litellm_stream, n // 4)),
                ):  # fmt: skip
                    results.setdefault(name, []).append(value)
                    print(f"round {round_no} {name:56s} {value:8.1f}", flush=True)
    finally:
        fake.terminate()
        fake.wait()
    print("\n| measure | median |\n|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    med = {k: statistics.median(v) for k, v in results.items()}
    keys = list(med)
    print(f"\ndirect / Router throughput: {med[keys[0]] / med[keys[1]]:.2f}x")
    print(f"LiteLLM streamed call / raw httpx latency: {med[keys[3]] / med[keys[2]]:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
