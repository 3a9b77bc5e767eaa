"""Throughput, latency and memory of `persona-mw serve` against a local fake upstream.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/bench_server.py [--repeats 3]

The fake OpenAI upstream runs in its own process (so it does not share the load generator's
GIL); the server runs as `persona-mw serve` (one worker) with the embedded in-memory store and
the stages build_middleware wires. Each configuration is measured ``--repeats`` times; medians
are reported. Memory is the server's RSS before load and after all runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import rss_kib, run_load
from persona_mw_server.testing import ServerProcess, free_port

FAKE = """
import sys, time
from persona_mw.testing import FakeOpenAIServer
REPLY = "Keep a fixed wake-up time and get daylight early; stop screens an hour before bed."
server = FakeOpenAIServer(chunk_size=16, reply=lambda r: REPLY)
# The fake writes headers and body of a plain answer separately; with Nagle on, the body waits
# for a delayed ACK (~40 ms per request). Real upstreams do not behave so; switch Nagle off.
server._server.RequestHandlerClass.disable_nagle_algorithm = True
# socketserver listens with a backlog of 5: at 50 in flight, SYNs are dropped and retried 1-3 s
# later, which would show up as our p99. A real provider accepts them.
server._server.socket.listen(1024)
server.start()
print(server.base_url, flush=True)
while True:
    time.sleep(3600)
"""


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", FAKE], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests per run at concurrency 50"
    )
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    fake, base = start_fake()
    folder = Path(tempfile.mkdtemp(prefix="bench-server-"))
    config = folder / "persona.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "fake",
                        "litellm_params": {
                            "model": "openai/fake",
                            "api_base": base,
                            "api_key": "x",
                        },
                    }
                ],
                "settings": {"hash_secret": "bench"},
            }
        )
    )
    results: dict[str, Any] = {"runs": {}}
    try:
        with ServerProcess(config, port=free_port(), log_path=folder / "server.log") as server:
            results["rss_kib_idle"] = rss_kib(server.pid)
            plan = [
                (1, False, max(100, args.requests // 5)),
                (50, False, args.requests),
                (1, True, max(100, args.requests // 5)),
                (50, True, args.requests),
            ]
            for concurrency, stream, n in plan:
                name = f"c{concurrency}{'-stream' if stream else ''}"
                runs = [
                    run_load(server.base_url, "fake", concurrency, n, stream=stream)
                    for _ in range(args.repeats)
                ]
                results["runs"][name] = runs
                rss = rss_kib(server.pid)
                summary = {
                    k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")
                }
                errors = sum(r["errors"] for r in runs)
                print(
                    f"{name:12s} rps={summary['rps']:8.1f} p50={summary['p50_ms']:7.2f} ms "
                    f"p99={summary['p99_ms']:7.2f} ms errors={errors} rss={rss / 1024:.1f} MiB",
                    flush=True,
                )
                results.setdefault("rss_kib_after", {})[name] = rss
            time.sleep(0.5)
            results["rss_kib_end"] = rss_kib(server.pid)
    finally:
        fake.terminate()
        fake.wait()
    print(
        f"rss idle={results['rss_kib_idle'] / 1024:.1f} MiB "
        f"end={results['rss_kib_end'] / 1024:.1f} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
