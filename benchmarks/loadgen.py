"""A small closed-loop load generator for OpenAI-style chat endpoints (httpx.AsyncClient).

    from loadgen import run_load
    result = run_load("http://127.0.0.1:8080", "fake", concurrency=50, n_requests=2000)
    # {"requests", "errors", "concurrency", "seconds", "rps", "p50_ms", "p99_ms", ...}

``concurrency`` workers each send requests back to back until ``n_requests`` are done; a few
warm-up requests are sent first and not counted. Used by bench_server.py and by the
side-by-side comparison with the LiteLLM proxy.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

__all__ = ["percentile", "rss_kib", "run_load"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid: int) -> int:
    """Resident memory of a process (and nothing else), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _run(
    base_url: str,
    model: str,
    concurrency: int,
    n_requests: int,
    *,
    stream: bool,
    api_key: str,
    users: int,
    warmup: int,
    content: str,
    user_prefix: str,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    remaining = n_requests
    url = base_url.rstrip("/") + "/v1/chat/completions"

    async with httpx.AsyncClient(
        limits=limits, timeout=60, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:

        async def one(i: int) -> bool:
            body = {
                "model": model,
                "user": f"{user_prefix}{i % users}",
                "stream": stream,
                "messages": [{"role": "user", "content": content}],
            }
            if not stream:
                response = await client.post(url, json=body)
                return response.status_code == 200 and bool(
                    response.json()["choices"][0]["message"]["content"]
                )
            async with client.stream("POST", url, json=body) as response:
                last = ""
                async for line in response.aiter_lines():
                    if line:
                        last = line
                return response.status_code == 200 and last == "data: [DONE]"

        await asyncio.gather(*(one(i) for i in range(warmup)))

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                i = remaining
                started = time.perf_counter()
                try:
                    ok = await one(i)
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "concurrency": concurrency,
        "stream": stream,
        "seconds": round(seconds, 3),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else float("nan"),
    }


def run_load(
    base_url: str,
    model: str,
    concurrency: int,
    n_requests: int,
    *,
    stream: bool = False,
    api_key: str = "unused",
    users: int = 100,
    warmup: int = 20,
    content: str = "How do I sleep better?",
    user_prefix: str = "bench-user-",
) -> dict[str, Any]:
    """Send ``n_requests`` chat completions with ``concurrency`` in flight; return throughput
    and latency percentiles (ms). ``base_url`` is the server root (without ``/v1``)."""
    return asyncio.run(
        _run(
            base_url,
            model,
            concurrency,
            n_requests,
            stream=stream,
            api_key=api_key,
            users=users,
            warmup=warmup,
            content=content,
            user_prefix=user_prefix,
        )
    )
