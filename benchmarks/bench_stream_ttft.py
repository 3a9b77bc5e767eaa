"""Streaming at the speed of the model: time to first token and per-character delay, side by side.

    .ci/proxy-env.sh .venv-proxy   # the bare LiteLLM proxy lives in its own venv
    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/bench_stream_ttft.py \\
        [--requests 30] [--rounds 3] [--settle 0.1]

Two fake OpenAI upstreams on loopback (``persona_mw.testing.FakeOpenAIServer``, each in its own
process) stream the same 210-character reply at a fixed rate: 4-character chunks 20 ms apart,
and 4-character chunks 80 ms apart (50 characters/s). Through each, one request at a time,
interleaved request by request so drift of the shared machine hits all alike:

- the upstream directly;
- a bare LiteLLM proxy (``.venv-proxy``, one worker);
- ``persona-mw serve`` (one worker) with the baseline wiring (no policy file: crisis,
  ai-disclosure, minor-safety), with the ``pii`` pack, and with every built-in pack;
- the Python API: ``Middleware.astream`` in this process, without stages and with every pack.

First, without timing, the release schedule of the stream filter alone: with which chunk the
reply's first text leaves and how many chunk intervals a character waits on average (exact;
``--schedule-only`` prints just that). Then, reported per upstream and path, medians over
rounds of: time to the first character *of the
reply* (a notice the middleware puts before it is not counted) p50/p99; the median gap between
content chunks; and the mean delay of a reply character behind its arrival through the upstream
directly (per request, then p50 over requests). The reply has no personal data or profanity, so
every path delivers it unchanged.

``--settle`` waits after each request: a server's work after the last chunk (LiteLLM's
end-of-stream bookkeeping, the middleware's usage recording) otherwise still runs while the
next path's request starts, and that path's time to first token pays for it on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_proxy_compare import LiteLLMProxyProcess  # noqa: E402 - same proxy start-up
from persona_mw_server.testing import ServerProcess  # noqa: E402

REPLY = (
    "Sure, here is how to reset your password. Open the settings page and choose Security, "
    "then Password. Type your current password once and the new one twice. Press Save and "
    "sign in again on your other devices."
)
CHUNK = 4
RATES = {"fast": 0.020, "slow": 0.080}  # seconds between 4-character chunks: 200 and 50 chars/s
ALL_PACKS = ["crisis", "ai-disclosure", "minor-safety", "pii", "profanity"]

#: The fake upstream: a stdlib SSE server that also records when it sent each chunk
#: (``time.monotonic``, one clock for every process on the machine) under the request's marker
#: (its user message), so a client can tell how long each character waited on the way.
FAKE = """
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
REPLY, CHUNK, DELAY = {reply!r}, {chunk}, {delay}
SENT = {{}}
LOCK = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        marker = self.path.partition("?marker=")[2]
        with LOCK:
            body = json.dumps(SENT.pop(marker, [])).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        marker = request["messages"][-1]["content"].rpartition("(ref ")[2].rstrip(")")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        base = {{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake"}}
        def event(delta, finish=None):
            choice = {{"index": 0, "delta": delta, "finish_reason": finish}}
            self.wfile.write(b"data: " + json.dumps({{**base, "choices": [choice]}}).encode()
                             + b"\\n\\n")
            self.wfile.flush()
        event({{"role": "assistant", "content": ""}})
        times = []
        with LOCK:
            SENT[marker] = times  # filled as the chunks go: complete before the last event
        for i in range(0, len(REPLY), CHUNK):
            time.sleep(DELAY)
            times.append(time.monotonic())
            event({{"content": REPLY[i:i + CHUNK]}})
        event({{}}, "stop")
        self.wfile.write(b"data: [DONE]\\n\\n")
        self.wfile.flush()
        self.close_connection = True

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"http://127.0.0.1:{{server.server_address[1]}}/v1", flush=True)
server.serve_forever()
"""


@dataclass
class Run:
    """One streamed request: when it was sent, each content piece with when it came, and when
    the upstream sent each of its chunks (all ``time.monotonic``)."""

    started: float
    events: list[tuple[float, str]]
    sent: list[float]


#: One way to stream a reply: given the request's marker, (when it was sent, the content events).
Stream = Callable[[str], Awaitable[tuple[float, list[tuple[float, str]]]]]


def start_upstream(delay: float) -> tuple[subprocess.Popen[str], str]:
    code = FAKE.format(chunk=CHUNK, reply=REPLY, delay=delay)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def ask(marker: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"How do I reset my password? (ref {marker})"}]


async def http_stream(
    client: httpx.AsyncClient, url: str, model: str, headers: dict[str, str], marker: str
) -> tuple[float, list[tuple[float, str]]]:
    body = {"model": model, "stream": True, "messages": ask(marker)}
    events: list[tuple[float, str]] = []
    started = time.monotonic()
    async with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    events.append((time.monotonic(), content))
    return started, events


async def api_stream(mw: Any, upstream: str, marker: str) -> tuple[float, list[tuple[float, str]]]:
    events: list[tuple[float, str]] = []
    started = time.monotonic()
    stream: AsyncIterator[Any] = mw.astream(
        user=f"u-{marker}",
        model="openai/fake",
        api_base=upstream,
        api_key="x",
        messages=ask(marker),
    )
    async for chunk in stream:
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            events.append((time.monotonic(), content))
    return started, events


def reply_times(run: Run) -> list[float]:
    """When each character of the reply reached the client (notices around it skipped)."""
    text = "".join(c for _, c in run.events)
    offset = text.find(REPLY[:40])
    if offset < 0:
        raise SystemExit(f"the reply was changed on the way: {text[:200]!r}")
    times: list[float] = []
    position = 0
    for at, content in run.events:
        for _ in content:
            if offset <= position < offset + len(REPLY):
                times.append(at)
            position += 1
    return times


def summarise(runs: list[Run]) -> dict[str, float]:
    first = [(reply_times(r)[0] - r.started) * 1000 for r in runs]
    gaps = [
        (b[0] - a[0]) * 1000 for r in runs for a, b in itertools.pairwise(r.events) if b[0] > a[0]
    ]
    # how long each character waited between leaving the upstream and reaching the client
    lags = [
        statistics.fmean(t - r.sent[i // CHUNK] for i, t in enumerate(reply_times(r))) * 1000
        for r in runs
    ]
    return {
        "ttft_p50": statistics.median(first),
        "ttft_p99": sorted(first)[max(0, round(0.99 * len(first)) - 1)],
        "gap_p50": statistics.median(gaps) if gaps else 0.0,
        "lag_p50": statistics.median(lags),
    }


def release_schedule() -> None:
    """Without timing (no load can blur it): the reply's 4-character chunks fed to the stream
    filter of each configuration, and for every reply character how many chunks later than its
    own it was released. A chunk interval is 20 or 80 ms on the upstreams above."""
    from persona_mw.bounds import StreamFilter, policy_from_dict, resolve
    from persona_mw.bounds.scan import hold_back_for
    from persona_mw.profile import Profile

    configs = {
        "baseline wiring": ["crisis", "ai-disclosure", "minor-safety"],
        "pii pack": ["pii"],
        "every pack": ALL_PACKS,
        "every pack but pii": [p for p in ALL_PACKS if p != "pii"],
    }
    print("| stream filter of | first text leaves with chunk | mean delay (chunk intervals) |")
    print("|---|---|---|")
    for name, packs in configs.items():
        policy = policy_from_dict({"version": name, "packs": packs})
        scanner = resolve(policy, Profile(user_id="schedule")).output
        filt = StreamFilter(scanner, None, hold_back=hold_back_for(scanner))
        arrived: list[int] = []
        delays: list[int] = []
        first = None
        for index in range(0, len(REPLY), CHUNK):
            chunk_no = index // CHUNK
            arrived += [chunk_no] * len(REPLY[index : index + CHUNK])
            released = filt.feed(REPLY[index : index + CHUNK])
            if released and first is None:
                first = chunk_no + 1
            delays += [chunk_no - arrived[len(delays) + k] for k in range(len(released))]
        tail = len(filt.finish())
        delays += [len(REPLY) // CHUNK - arrived[len(delays) + k] for k in range(tail)]
        print(f"| {name} | {first} | {statistics.fmean(delays):.2f} |")
    print()


def write_policy(folder: Path, name: str, packs: list[str]) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"version": f"bench-{name}", "packs": packs}))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=12, help="per path and round (a third on the slow upstream)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait after each request, so the next path does not start while the "
        "last one's end-of-stream work (LiteLLM's bookkeeping, usage recording) still runs",
    )
    parser.add_argument(
        "--schedule-only", action="store_true", help="only the release schedule (no timing)"
    )
    args = parser.parse_args()
    release_schedule()
    if not args.schedule_only:
        asyncio.run(run(args.requests, args.rounds, args.settle))


async def run(requests: int, rounds: int, settle: float = 0.0) -> None:
    import structlog

    from persona_mw import Middleware
    from persona_mw.bounds import BoundsConfig, bounds_stages

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    folder = Path(tempfile.mkdtemp(prefix="bench-stream-ttft-"))
    master_key = f"sk-bench-{uuid.uuid4().hex}"
    with ExitStack() as stack:
        upstreams: dict[str, str] = {}
        for rate, delay in RATES.items():
            proc, url = start_upstream(delay)
            stack.callback(proc.wait)
            stack.callback(proc.terminate)
            upstreams[rate] = url
        model_list = [
            {
                "model_name": rate,
                "litellm_params": {"model": "openai/fake", "api_base": url, "api_key": "x"},
            }
            for rate, url in upstreams.items()
        ]
        bare_config = folder / "bare.yaml"
        bare_config.write_text(
            yaml.safe_dump(
                {"model_list": model_list, "general_settings": {"master_key": master_key}}
            )
        )
        bare = LiteLLMProxyProcess(bare_config, {}, folder / "bare.log")
        stack.callback(bare.stop)
        policies = {
            "baseline": None,
            "pii pack": write_policy(folder, "pii", ["pii"]),
            "every pack": write_policy(folder, "all", ALL_PACKS),
        }
        serves: dict[str, ServerProcess] = {}
        for name, policy in policies.items():
            config = folder / f"serve-{name.replace(' ', '-')}.yaml"
            data: dict[str, Any] = {"settings": {"hash_secret": "bench"}, "model_list": model_list}
            if policy:
                data["bounds"] = {"policies": [policy]}
            config.write_text(yaml.safe_dump(data))
            server = ServerProcess(config, log_path=folder / f"{config.stem}.log")
            # a loaded machine can take over a minute to import LiteLLM
            serves[name] = server.start(timeout=300)
            stack.callback(server.stop)
        bare.wait_ready()
        check_in, check_out = bounds_stages(BoundsConfig(policies=(policies["every pack"],)))
        plain_mw = Middleware()
        bounded_mw = Middleware(input_stages=[check_in], output_stages=[check_out])

        async with httpx.AsyncClient(timeout=60) as client:

            def over_http(base: str, model: str, key: str | None) -> Stream:
                auth = {"authorization": f"Bearer {key}"} if key else {}

                def one(marker: str) -> Awaitable[tuple[float, list[tuple[float, str]]]]:
                    headers = {**auth, "X-Persona-User": f"u-{marker}"}
                    return http_stream(client, f"{base}/chat/completions", model, headers, marker)

                return one

            async def measure(path: Stream, upstream: str) -> Run:
                marker = uuid.uuid4().hex[:12]
                started, events = await path(marker)
                query = f"{upstream.removesuffix('/v1')}/sent?marker={marker}"
                run = Run(started, events, (await client.get(query)).json())
                await asyncio.sleep(settle)
                return run

            results: dict[str, dict[str, list[dict[str, float]]]] = {}
            for rate, upstream in upstreams.items():
                paths: dict[str, Stream] = {
                    "upstream directly": over_http(upstream, "fake", None),
                    "bare LiteLLM proxy": over_http(f"{bare.base_url}/v1", rate, master_key),
                    **{
                        f"persona-mw serve, {name}": over_http(f"{s.base_url}/v1", rate, None)
                        for name, s in serves.items()
                    },
                    "Middleware.astream, no stages": partial(api_stream, plain_mw, upstream),
                    "Middleware.astream, every pack": partial(api_stream, bounded_mw, upstream),
                }
                for path in paths.values():  # warm up every path once
                    await measure(path, upstream)
                n = requests if rate == "fast" else max(3, requests // 3)
                for round_no in range(rounds):
                    runs: dict[str, list[Run]] = {name: [] for name in paths}
                    for _ in range(n):
                        for name, path in paths.items():
                            runs[name].append(await measure(path, upstream))
                    for name, path_runs in runs.items():
                        summary = summarise(path_runs)
                        results.setdefault(rate, {}).setdefault(name, []).append(summary)
                        print(
                            f"{rate} round {round_no + 1} {name:34s} "
                            + " ".join(f"{k}={v:.1f}" for k, v in summary.items()),
                            flush=True,
                        )
    report(results, requests, rounds)


def report(
    results: dict[str, dict[str, list[dict[str, float]]]], requests: int, rounds: int
) -> None:
    print(f"\n{requests} requests per path per round, {rounds} rounds; medians over rounds (ms)")
    for rate, by_path in results.items():
        chars_per_s = CHUNK / RATES[rate]
        print(
            f"\n{rate}: {CHUNK}-character chunks every {RATES[rate] * 1000:.0f} ms "
            f"({chars_per_s:.0f} characters/s)\n"
        )
        print("| path | TTFT p50 | TTFT p99 | chunk gap p50 | character delay p50 |")
        print("|---|---|---|---|---|")
        for name, rounds_ in by_path.items():
            m = {k: statistics.median(r[k] for r in rounds_) for k in rounds_[0]}
            print(
                f"| {name} | {m['ttft_p50']:.1f} | {m['ttft_p99']:.1f} | {m['gap_p50']:.1f} "
                f"| {m['lag_p50']:.1f} |"
            )


if __name__ == "__main__":
    main()
