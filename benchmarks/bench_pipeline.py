"""Pipeline overhead over bare ``litellm.acompletion`` with the same mock, and profile-store reads.

    .venv/bin/python benchmarks/bench_pipeline.py [--calls 2000] [--rounds 5] [--frozen-heap]

Side by side in one run, interleaved round by round so machine noise hits every variant alike:
  bare     litellm.acompletion(mock_response=...)
  empty    Middleware() with no stages (profile load + context + log event)
  lastonly full, with the input rules on the last user message only (as before every message
           and the profile text were checked): what checking everything costs
  full     build_middleware(demo config): bounds, dependence, personalisation, usage recording,
           metrics
  idle     full, for users back after the usage cache expired: every call reloads their usage
  fresh    full, with a new user message each call: the input rules (phrases, the crisis
           classifier) check it instead of answering from the verdict cache
  unmetered  full without its last finish stage (the per-call Prometheus metrics); the
           paired difference full - unmetered is what counting costs
  history  full, with a 40-message history replayed before a new user message each call (the
           input rules check every message; the verdict cache checks only the new one)
  nocache  history, with the input stage's verdict cache off (every message checked each call)
Calls are interleaved one by one (rotating order); added latency is the median of paired
differences (variant call - the bare call beside it); figures are medians over rounds. Each call
is also timed in CPU time of the event loop's thread (``time.thread_time``): on a machine other
processes load, wall-clock waits for a core and CPU time does not, so the CPU columns say what
the code costs when the wall-clock ones are swamped (work in LiteLLM's own threads is not in
them, for bare or wrapped calls alike). Background work (the usage writer) runs between and
inside later calls of any variant, as it does in a server.
Then the Redis store: cached lookup (in-process hit) vs uncached get (one round trip), on a
redis-server this script starts on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

TESTS = Path(__file__).resolve().parent.parent / "tests"
MESSAGES = [{"role": "user", "content": "How can I sleep better?"}]
MODEL = "openai/gpt-4o-mini"
HISTORY = [
    {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": f"Turn {i}: " + "a question about sleep, light, routines and rest. " * 4,
    }
    for i in range(40)
]
USERS = 500
REPLY = (
    "Keep a fixed wake-up time, get daylight in the morning, and stop screens an hour before bed."
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def pipeline(calls: int, rounds: int, *, frozen: bool = False) -> dict[str, dict[str, float]]:
    import litellm

    from persona_mw import Middleware, Profile, Settings, build_middleware, load_config
    from persona_mw.app import demo_config_sections
    from persona_mw.bounds import BoundsInputStage
    from persona_mw.bounds.inputs import VerdictCache
    from persona_mw.bounds.stages import check_input, input_verdict, redact_last_user
    from persona_mw.types import CallContext

    class LastUserOnly(BoundsInputStage):
        """The input check as it was: the last user message only, profile text unchecked."""

        async def __call__(self, ctx: CallContext) -> None:
            effective = self.effective(ctx.profile, ctx.jurisdictions)
            ctx.policy = effective
            ctx.disclosure = effective.ai_disclosure
            ctx.instructions.extend(effective.instructions)
            text = ctx.user_text()
            if not text:
                return
            hits = await check_input(effective, text, ctx=ctx, classifiers=self.classifiers)
            if not hits:
                return
            verdict = input_verdict(hits)
            ctx.decisions.extend(verdict.decisions)
            if verdict.reply is not None:
                ctx.reply = verdict.reply
                ctx.reply_finish_reason = "content_filter"
                return
            ctx.notices.extend(verdict.notices)
            ctx.instructions.extend(verdict.instructions)
            if verdict.redact:
                ctx.prompt_messages = redact_last_user(ctx.prompt_messages, effective)

    empty = Middleware(settings=Settings(hash_secret="bench"))
    full = build_middleware(load_config(**demo_config_sections()))
    nocache = build_middleware(load_config(**demo_config_sections()))
    lastonly = build_middleware(load_config(**demo_config_sections()))
    lastonly.input_stages = tuple(
        LastUserOnly(policy=stage.policy) if isinstance(stage, BoundsInputStage) else stage
        for stage in lastonly.input_stages
    )
    for stage in nocache.input_stages:
        if isinstance(stage, BoundsInputStage):
            stage.verdicts = VerdictCache(max_entries=0)
    # Users who come back after the dependence stage's usage cache expired (5 s): every call
    # reloads the user's usage from the store (memory here), as most calls of a deployment whose
    # users write every minute or so do.
    idle = build_middleware(
        load_config(**demo_config_sections(), signals={"events_cache_ttl_s": 0})
    )
    unmetered = build_middleware(load_config(**demo_config_sections()))
    assert unmetered.finish_stages[-1].name == "metrics"
    unmetered.finish_stages = unmetered.finish_stages[:-1]
    profile = Profile(
        user_id="bench",
        own_rules="Be concise. Cite sources.",
        self_description="A night-shift nurse.",
        style={
            "tone": "friendly",
            "verbosity": "brief",
            "language": "en",
            "expertise": "novice",
            "format": "prose",
        },
        topics_to_avoid=["politics"],
        consent={"personalisation": True, "memory": True, "text_analysis": True},
    )
    users = [f"bench-{i}" for i in range(USERS)]
    for mw in (empty, lastonly, full, unmetered, nocache, idle):
        for user in users:
            await mw.store.put(profile.model_copy(update={"user_id": user}))
    turn = iter(range(10**9))

    variants: dict[str, Callable[[], Awaitable[object]]] = {
        "bare": lambda: litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=REPLY),
        "empty": lambda: empty.acompletion(
            user="bench-0", model=MODEL, messages=MESSAGES, mock_response=REPLY
        ),
        # A population of users, as in production: each sends a message now and then. (One
        # user sending thousands in a row is the heavy-user case; see docs/benchmarks.md.)
        "lastonly": lambda: lastonly.acompletion(
            user=users[next(turn) % USERS], model=MODEL, messages=MESSAGES, mock_response=REPLY
        ),
        "full": lambda: full.acompletion(
            user=users[next(turn) % USERS], model=MODEL, messages=MESSAGES, mock_response=REPLY
        ),
        "idle": lambda: idle.acompletion(
            user=users[next(turn) % USERS], model=MODEL, messages=MESSAGES, mock_response=REPLY
        ),
        # Every message new, as in a deployment: the input checks (phrases, the crisis
        # classifier) run each call instead of answering from the verdict cache.
        "fresh": lambda: full.acompletion(
            user=users[next(turn) % USERS],
            model=MODEL,
            messages=[{"role": "user", "content": f"How can I sleep better, take {next(turn)}?"}],
            mock_response=REPLY,
        ),
        "unmetered": lambda: unmetered.acompletion(
            user=users[next(turn) % USERS], model=MODEL, messages=MESSAGES, mock_response=REPLY
        ),
        "history": lambda: full.acompletion(
            user=users[next(turn) % USERS],
            model=MODEL,
            messages=with_history(),
            mock_response=REPLY,
        ),
        "nocache": lambda: nocache.acompletion(
            user=users[next(turn) % USERS],
            model=MODEL,
            messages=with_history(),
            mock_response=REPLY,
        ),
    }

    def with_history() -> list[dict[str, str]]:
        return [*HISTORY, {"role": "user", "content": f"And question {next(turn)}?"}]

    for call in variants.values():  # warm caches, imports, the profile cache
        await timed(call, 50)
    if frozen:  # as `persona-mw serve` does once started: a full collection skips start-up
        gc.collect()
        gc.freeze()
    names = list(variants)
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    metrics_cost: list[float] = []  # full - unmetered, paired call by call
    for r in range(rounds):
        # Interleave call by call (rotating the order), so noise lands on every variant alike,
        # and pair each variant's sample with the bare sample taken next to it.
        samples: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for i in range(calls):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                started, started_cpu = time.perf_counter(), time.thread_time()
                await variants[name]()
                cpu[name].append((time.thread_time() - started_cpu) * 1000)
                samples[name].append((time.perf_counter() - started) * 1000)
        for name in names:
            diffs = [x - b for x, b in zip(samples[name], samples["bare"], strict=True)]
            cpu_diffs = [x - b for x, b in zip(cpu[name], cpu["bare"], strict=True)]
            per_round[name].append(
                {
                    "p50": statistics.median(samples[name]),
                    "p99": percentile(samples[name], 0.99),
                    "added_p50": statistics.median(diffs),
                    "added_p99": percentile(samples[name], 0.99)
                    - percentile(samples["bare"], 0.99),
                    "cpu_p50": statistics.median(cpu[name]),
                    "cpu_added_p50": statistics.median(cpu_diffs),
                }
            )
        counting = [f - u for f, u in zip(samples["full"], samples["unmetered"], strict=True)]
        metrics_cost.append(statistics.median(counting))
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(
                f"{n} p50 {per_round[n][-1]['p50']:.3f} ms (+{per_round[n][-1]['added_p50']:.3f}, "
                f"CPU +{per_round[n][-1]['cpu_added_p50']:.3f})"
                for n in names
            ),
            file=sys.stderr,
        )
    await full.aclose()
    await nocache.aclose()
    await lastonly.aclose()
    await unmetered.aclose()
    await idle.aclose()
    result: dict[str, dict[str, float]] = {}
    bare_p50s = [x["p50"] for x in per_round["bare"]]
    for name in variants:
        rows = per_round[name]
        result[name] = {
            key: statistics.median(row[key] for row in rows)
            for key in ("p50", "p99", "added_p50", "added_p99", "cpu_p50", "cpu_added_p50")
        }
        result[name]["ratio_p50"] = statistics.median(
            row["p50"] / b for row, b in zip(rows, bare_p50s, strict=True)
        )
        result[name]["cpu_ratio_p50"] = statistics.median(
            row["cpu_p50"] / bare["cpu_p50"]
            for row, bare in zip(rows, per_round["bare"], strict=True)
        )
    result["counting"] = {"added_p50": statistics.median(metrics_cost)}
    return result


async def store_reads(n: int, rounds: int) -> dict[str, float]:
    sys.path.insert(0, str(TESTS))
    from conftest import RedisServer  # the tests' throwaway server, on a free loopback port

    from persona_mw import CachedProfileStore, Profile, RedisProfileStore

    server = RedisServer()
    try:
        raw = RedisProfileStore(server.url, prefix="bench:")
        cached = CachedProfileStore(RedisProfileStore(server.url, prefix="bench:"))
        await raw.put(Profile(user_id="bench", own_rules="x" * 500))
        await cached.start()
        for _ in range(500):  # the invalidation feed subscribes in the background
            if cached.feed_up:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the profile cache's invalidation feed did not come up in 5 s")
        await cached.lookup("bench")
        hit, miss = [], []
        for _ in range(rounds):
            hit.append(statistics.median(await timed(lambda: cached.lookup("bench"), n)))
            miss.append(statistics.median(await timed(lambda: raw.get("bench"), n)))
        await cached.aclose()
        await raw.aclose()
    finally:
        server.stop()
    return {
        "cached_us": statistics.median(hit) * 1000,
        "uncached_us": statistics.median(miss) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--frozen-heap",
        action="store_true",
        help="gc.freeze() after the warm-up, as `persona-mw serve` does after start-up: a full "
        "collection no longer walks what the process built to start (LiteLLM, the scanners): "
        "one in a run took 313 ms live and 16 ms frozen; the p50 figures did not move beyond "
        "the machine's noise",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # drop info events
    print(f"pipeline: {args.calls} calls x {args.rounds} rounds per variant", file=sys.stderr)
    result = asyncio.run(pipeline(args.calls, args.rounds, frozen=args.frozen_heap))
    print(
        "\n| variant | p50 ms | p99 ms | added p50 ms | added p99 ms | p50 ratio vs bare "
        "| CPU p50 ms | CPU added p50 ms | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    counting = result.pop("counting")["added_p50"]
    for name, row in result.items():
        print(
            f"| {name} | {row['p50']:.3f} | {row['p99']:.3f} | {row['added_p50']:.3f} | "
            f"{row['added_p99']:.3f} | {row['ratio_p50']:.2f}x | {row['cpu_p50']:.3f} | "
            f"{row['cpu_added_p50']:.3f} | {row['cpu_ratio_p50']:.2f}x |"
        )
    print(f"\ncounting (metrics stage): full - unmetered, paired p50: {counting * 1000:.1f} µs")
    reads = asyncio.run(store_reads(5000, args.rounds))
    print("\n| Redis profile store get | median µs |")
    print("|---|---|")
    print(f"| cached (in-process hit) | {reads['cached_us']:.1f} |")
    print(f"| uncached (one round trip) | {reads['uncached_us']:.1f} |")
    print(f"| ratio | {reads['uncached_us'] / reads['cached_us']:.0f}x |")


if __name__ == "__main__":
    main()
