"""Side by side, one run: `persona-mw serve` vs a bare LiteLLM proxy vs a LiteLLM proxy with the
persona_mw plugin, all on the same local fake upstream.

    .ci/proxy-env.sh      # the LiteLLM proxy lives in its own venv (.venv-proxy)
    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/bench_proxy_compare.py \\
        [--rounds 3] [--requests 600] [--json results.json]

All three servers (one worker each) and the fake upstream (its own process, the one
bench_server.py uses) run for the whole benchmark; each round measures every server in turn, so
slow drift of the shared machine hits all three alike. Reported: medians over the rounds of
requests/s and p50/p99 latency at concurrency 1 and 50 (plain and streamed), the ratio
ours / bare LiteLLM proxy, and each server's RSS (process tree) idle, after every round and at
the end. Persona_mw runs with the stages build_middleware wires, in both our server and the
plugin. The upstream is also measured alone, as the ceiling every server shares.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_server import start_fake  # noqa: E402 - the same upstream as the server benchmark
from loadgen import rss_kib, run_load  # noqa: E402
from persona_mw_server.testing import ServerProcess, free_port  # noqa: E402

MODEL = "fake"
PROXY_VENV = Path(os.environ.get("PROXY_VENV", ROOT / ".venv-proxy"))


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (uvicorn may run the app in a child)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += rss_kib(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, RuntimeError):
            continue
    return total


class LiteLLMProxyProcess:
    """``litellm --config FILE`` from the proxy venv, on a free loopback port, one worker."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log = log_path.open("wb")
        binary = PROXY_VENV / "bin" / "litellm"
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: run .ci/proxy-env.sh first")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
            ],
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"litellm proxy exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.base_url}/health/liveliness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"litellm proxy not ready in {timeout} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def model_list(upstream: str) -> list[dict[str, Any]]:
    return [
        {
            "model_name": MODEL,
            "litellm_params": {"model": "openai/fake", "api_base": upstream, "api_key": "x"},
        }
    ]


def write_configs(folder: Path, upstream: str, master_key: str) -> dict[str, Path]:
    persona = {"settings": {"hash_secret": "bench"}}
    ours = {**persona, "model_list": model_list(upstream)}
    bare = {"model_list": model_list(upstream), "general_settings": {"master_key": master_key}}
    plugin = {
        **bare,
        "guardrails": [
            {
                "guardrail_name": "persona-mw",
                "litellm_params": {
                    "guardrail": "persona_mw_litellm.PersonaGuardrail",
                    "mode": ["pre_call", "post_call"],
                    "default_on": True,
                    "persona_config": str(folder / "persona.yaml"),
                },
            }
        ],
    }
    paths = {}
    for name, data in (("ours", ours), ("bare", bare), ("plugin", plugin), ("persona", persona)):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data))
    return paths


PLAN = [  # (concurrency, stream, share of --requests)
    (1, False, 0.25),
    (50, False, 1.0),
    (1, True, 0.25),
    (50, True, 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=600, help="requests per run at c50")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()

    master_key = f"sk-bench-{uuid.uuid4().hex}"
    folder = Path(tempfile.mkdtemp(prefix="bench-proxy-compare-"))
    fake, upstream = start_fake()
    paths = write_configs(folder, upstream, master_key)
    results: dict[str, Any] = {"runs": {}, "rss_kib": {}, "folder": str(folder)}
    with ExitStack() as stack:
        stack.callback(fake.wait)
        stack.callback(fake.terminate)
        ours = stack.enter_context(
            ServerProcess(
                paths["ours"], log_path=folder / "ours.log", env={"PERSONA_MW_HASH_SECRET": "bench"}
            )
        )
        bare = LiteLLMProxyProcess(paths["bare"], {}, folder / "bare.log")
        stack.callback(bare.stop)
        plugin = LiteLLMProxyProcess(paths["plugin"], {}, folder / "plugin.log")
        stack.callback(plugin.stop)
        bare.wait_ready()
        plugin.wait_ready()
        servers: dict[str, tuple[str, int, str]] = {
            "persona-mw serve": (ours.base_url, ours.pid, "unused"),
            "LiteLLM proxy (bare)": (bare.base_url, bare.pid, master_key),
            "LiteLLM proxy + plugin": (plugin.base_url, plugin.pid, master_key),
        }
        upstream_root = upstream.removesuffix("/v1")
        for name, (_, pid, _) in servers.items():
            results["rss_kib"][name] = {"idle": tree_rss_kib(pid), "rounds": []}
        for round_no in range(1, args.rounds + 1):
            for concurrency, stream, share in PLAN:
                n = max(50, int(args.requests * share))
                key = f"c{concurrency}{'-stream' if stream else ''}"
                targets = [("upstream alone", upstream_root, "x")] + [
                    (name, url, api_key) for name, (url, _, api_key) in servers.items()
                ]
                for name, url, api_key in targets:
                    run = run_load(url, MODEL, concurrency, n, stream=stream, api_key=api_key)
                    results["runs"].setdefault(name, {}).setdefault(key, []).append(run)
                    print(
                        f"round {round_no} {key:10s} {name:24s} rps={run['rps']:7.1f} "
                        f"p50={run['p50_ms']:7.1f} p99={run['p99_ms']:7.1f} "
                        f"errors={run['errors']}",
                        flush=True,
                    )
            for name, (_, pid, _) in servers.items():
                results["rss_kib"][name]["rounds"].append(tree_rss_kib(pid))
        time.sleep(1)
        for name, (_, pid, _) in servers.items():
            results["rss_kib"][name]["end"] = tree_rss_kib(pid)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def median_of(runs: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] for r in runs))


def report(results: dict[str, Any]) -> None:
    runs = results["runs"]
    print("\n| run | server | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for key in runs["upstream alone"]:
        for name in runs:
            r = runs[name][key]
            print(
                f"| {key} | {name} | {median_of(r, 'rps'):.1f} | {median_of(r, 'p50_ms'):.1f} "
                f"| {median_of(r, 'p99_ms'):.1f} | {sum(x['errors'] for x in r)} |"
            )
    print("\n| run | ours / bare LiteLLM (req/s) | plugin / bare LiteLLM (req/s) |")
    print("|---|---|---|")
    for key in runs["upstream alone"]:
        base = median_of(runs["LiteLLM proxy (bare)"][key], "rps")
        ours = median_of(runs["persona-mw serve"][key], "rps")
        plugin = median_of(runs["LiteLLM proxy + plugin"][key], "rps")
        print(f"| {key} | {ours / base:.2f}x | {plugin / base:.2f}x |")
    print("\n| server | RSS idle MiB | after each round MiB | end MiB |")
    print("|---|---|---|---|")
    for name, rss in results["rss_kib"].items():
        rounds = ", ".join(f"{v / 1024:.0f}" for v in rss["rounds"])
        print(f"| {name} | {rss['idle'] / 1024:.0f} | {rounds} | {rss['end'] / 1024:.0f} |")


if __name__ == "__main__":
    main()
