"""Bounded soak run: steady concurrency against a real ``persona-mw serve`` for some minutes.

    .venv/bin/python benchmarks/soak.py --minutes 3 --concurrency 20

Everything is on loopback and stops by itself: a redis-server of its own (profile store and,
where the deployment records usage, usage events), a local OpenAI-style upstream
(:class:`persona_mw.testing.FakeOpenAIServer`), and ``persona-mw serve`` as a subprocess. A
closed loop of ``--concurrency`` clients sends plain and streamed completions for ``--users``
users (a share with PII or a crisis line in the message, so the bounds work too). Every
``--sample-s`` seconds it samples the server process: RSS, open file descriptors, TCP
connections, and the requests done. At the end it checks the books:

* every request the clients sent got an answer, and the server's own request counter
  (``/metrics``) saw exactly as many;
* usage events in Redis == 2 x requests answered (user message + reply) when the deployment
  records usage; otherwise it says so;
* RSS, fds and connections in the last third of the run against the first third (after a
  warm-up): the growth is printed, and a ``FLAT`` / ``GROWING`` verdict.

Exit status 0 when the books balance and nothing grows beyond the tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import psutil
import redis
import yaml
from loadgen import percentile, rss_kib
from persona_mw_server import hash_key
from persona_mw_server.testing import ServerProcess, free_port

from persona_mw.testing import FakeOpenAIServer

APP_KEY = "pmw-soak-app-key-000000000000000000000000000"
PREFIX = "soak:"
MESSAGES = [
    "How do I reset my password?",
    "Can you summarise the return policy in two lines?",
    "my phone is 07700 900123, call me back please",
    "I feel like I want to end my life",
    "Tell me a long story about the sea.",
]


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    connections: int
    done: int
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    client.close()
    return proc, url


def write_config(path: Path, upstream: str, redis_url: str) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "fake",
                "litellm_params": {"model": "openai/fake", "api_base": upstream, "api_key": "x"},
            }
        ],
        "store": {"url": redis_url, "prefix": PREFIX},
        "settings": {"hash_secret": "soak"},
        "server": {
            "api_keys": [{"name": "soak", "role": "app", "key_hash": hash_key(APP_KEY)}],
            "upstream_timeout_s": 30,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def process_sample(pid: int) -> tuple[float, int, int]:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    rss = sum(rss_kib(p.pid) for p in procs) / 1024
    fds = sum(p.num_fds() for p in procs)
    connections = sum(len(p.net_connections(kind="tcp")) for p in procs)
    return rss, fds, connections


async def load(
    base_url: str,
    tally: Tally,
    stop: asyncio.Event,
    concurrency: int,
    users: int,
    stream_share: float,
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {APP_KEY}"}
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=60, headers=headers
    ) as client:

        async def worker(n: int) -> None:
            rng = random.Random(n)
            while not stop.is_set():
                body = {
                    "model": "fake",
                    "user": f"soak-user-{rng.randrange(users)}",
                    "messages": [{"role": "user", "content": rng.choice(MESSAGES)}],
                    "stream": rng.random() < stream_share,
                }
                tally.sent += 1
                started = time.perf_counter()
                try:
                    if body["stream"]:
                        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                            last = ""
                            async for line in r.aiter_lines():
                                last = line or last
                            good = r.status_code == 200 and last == "data: [DONE]"
                            key = str(r.status_code) if r.status_code != 200 else "bad-stream"
                    else:
                        r = await client.post("/v1/chat/completions", json=body)
                        good = r.status_code == 200
                        key = str(r.status_code)
                except httpx.HTTPError as exc:
                    good, key = False, type(exc).__name__
                if good:
                    tally.ok += 1
                    tally.latencies.append((time.perf_counter() - started) * 1000)
                else:
                    tally.errors[key] = tally.errors.get(key, 0) + 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))


async def sampler(
    pid: int, tally: Tally, stop: asyncio.Event, every: float, samples: list[Sample], t0: float
) -> None:
    last_done, last_t, last_lat = 0, time.monotonic(), 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        now = time.monotonic()
        rss, fds, conns = process_sample(pid)
        window = tally.latencies[last_lat:]
        samples.append(
            Sample(
                t=now - t0,
                rss_mib=rss,
                fds=fds,
                connections=conns,
                done=tally.ok,
                rps=(tally.ok - last_done) / (now - last_t),
                p50_ms=percentile(window, 50),
                p99_ms=percentile(window, 99),
            )
        )
        last_done, last_t, last_lat = tally.ok, now, len(tally.latencies)
        s = samples[-1]
        print(
            f"{s.t:7.1f} s  {s.rss_mib:8.1f} MiB  {s.fds:5d} fds  {s.connections:5d} conns  "
            f"{s.done:8d} done  {s.rps:7.1f} req/s  p50 {s.p50_ms:7.1f} ms  p99 {s.p99_ms:7.1f} ms",
            flush=True,
        )


def server_request_count(base_url: str) -> int:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("persona_mw_server_requests_total{")
            and 'route="/v1/chat/completions"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def usage_events(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.scan_iter(match=f"{PREFIX}*:usage:events", count=1000)
        return sum(client.zcard(key) for key in keys)
    finally:
        client.close()


def growth(samples: list[Sample], attr: str) -> tuple[float, float]:
    third = max(1, len(samples) // 3)
    first = statistics.median(getattr(s, attr) for s in samples[:third])
    last = statistics.median(getattr(s, attr) for s in samples[-third:])
    return first, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--stream-share", type=float, default=0.3)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=20.0, help="not counted in the trend")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed RSS growth (share)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="persona-soak-")
    redis_proc, redis_url = start_redis(workdir)
    upstream = FakeOpenAIServer(reply=lambda _: "Sure, here is an answer. " * 8).start()
    config = write_config(Path(workdir) / "persona.yaml", upstream.base_url, redis_url)
    log = Path(workdir) / "serve.log"
    server = ServerProcess(config, log_path=log, env={"PERSONA_MW_HASH_SECRET": "soak"}).start()
    tally, samples = Tally(), []
    try:
        print(f"soak: {args.minutes} min, concurrency {args.concurrency}, server pid {server.pid}")

        async def run() -> None:
            stop, t0 = asyncio.Event(), time.monotonic()
            tasks = [
                asyncio.create_task(
                    load(
                        server.base_url,
                        tally,
                        stop,
                        args.concurrency,
                        args.users,
                        args.stream_share,
                    )
                ),
                asyncio.create_task(sampler(server.pid, tally, stop, args.sample_s, samples, t0)),
            ]
            await asyncio.sleep(args.minutes * 60)
            stop.set()
            await asyncio.gather(*tasks)

        asyncio.run(run())
        time.sleep(1.0)
        counted = server_request_count(server.base_url)
    finally:
        server.stop()
        upstream.stop()
    events = usage_events(redis_url)
    redis_proc.terminate()
    redis_proc.wait(10)
    dropped_logs = log.read_text().count('"usage.dropped"') if log.exists() else 0
    shutil.rmtree(workdir, ignore_errors=True)

    steady = [s for s in samples if s.t >= args.warmup_s] or samples
    rss0, rss1 = growth(steady, "rss_mib")
    fd0, fd1 = growth(steady, "fds")
    c0, c1 = growth(steady, "connections")
    answered = tally.ok + sum(tally.errors.values())
    recording = events > 0
    books = {
        "sent": tally.sent,
        "answered_ok": tally.ok,
        "errors": tally.errors,
        "server_counted": counted,
        "usage_events": events,
        "usage_expected": 2 * tally.ok if recording else None,
        "usage_dropped_log_lines": dropped_logs,
    }
    flat = {
        "rss_mib": (round(rss0, 1), round(rss1, 1)),
        "fds": (fd0, fd1),
        "connections": (c0, c1),
    }
    ok_books = tally.sent == answered == counted and not tally.errors
    if recording:
        ok_books = ok_books and events == 2 * tally.ok
    ok_flat = rss1 <= rss0 * (1 + args.tolerance) and fd1 <= fd0 + 5 and c1 <= c0 + 5
    lat = tally.latencies
    print("\n| figure | value |\n|---|---|")
    rows = [
        ("duration", f"{args.minutes} min at concurrency {args.concurrency}"),
        ("requests answered OK", f"{tally.ok} ({tally.ok / (args.minutes * 60):.1f} req/s)"),
        ("errors", json.dumps(tally.errors) or "{}"),
        ("server's own count (/metrics)", str(counted)),
        ("latency p50 / p99", f"{percentile(lat, 50):.1f} / {percentile(lat, 99):.1f} ms"),
        ("RSS first third -> last third", f"{rss0:.1f} -> {rss1:.1f} MiB"),
        ("open fds first -> last", f"{fd0} -> {fd1}"),
        ("TCP connections first -> last", f"{c0} -> {c1}"),
        (
            "usage events in Redis",
            f"{events} (expected {2 * tally.ok})"
            if recording
            else "0: this deployment records no usage (build_middleware wires no recorder)",
        ),
        ("books balance", "yes" if ok_books else "NO"),
        ("memory / fds / connections", "FLAT" if ok_flat else "GROWING"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"books": books, "flat": flat, "samples": [s.__dict__ for s in samples]}, indent=1
            )
        )
    return 0 if ok_books and ok_flat else 1


if __name__ == "__main__":
    sys.exit(main())
