"""The latency a concurrent input classifier adds when it answers faster than the model.

    .venv/bin/python benchmarks/bench_classifiers.py [--calls 40] [--rounds 5] \
        [--model-ms 120] [--classifier-ms 30] [--co-located]

One fake provider over real HTTP on loopback (FakeOpenAIServer, in a process of its own so its
threads do not compete with the middleware for the GIL) answers the model after ``--model-ms``
and ``/v1/moderations`` after ``--classifier-ms``. Side by side in one run,
call by call interleaved, through ``Middleware.acompletion`` and ``astream`` (full reply):
  baseline    the same policy without the moderation rule
  moderation  plus a tier-1 moderation rule (runs beside the model call; the engine settles it
              before releasing the reply)
  sequential  the moderation asked first, then the model (what a classifier that held the model
              call back would cost: the reference, not a mode of persona_mw)
Every call sends a new text (no verdict cache), of the same length in every variant: the fake
model echoes it, and a reply one streamed chunk longer costs ~0.5 ms of CPU (docs/benchmarks.md).
Figures: per round, the median wall time of each variant; then the median over rounds of
(variant - baseline), in ms. The gate: moderation adds <= 1 ms at the median. Also the median,
over all calls, of each call minus the baseline call made just before it (less noisy on a shared
machine: both saw the same moment's load).

The provider stands in for one on another machine, whose clock our CPU cannot hold back: by
default it runs on a core of its own (the last; this process on the others) at nice -10 where
permitted. ``--co-located`` lets it share the cores at normal priority, as a model server on the
same host would: then the classifier call's CPU can delay the provider reading the model request
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def placement(*, provider: bool) -> str:
    """Put this process where a remote provider's separation is imitated: the provider on the
    last CPU at nice -10 (raising priority needs root: without it, normal priority), the
    middleware on the other CPUs. Returns what was done, for the report."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return "shared cores (fewer than 2 CPUs)"
    os.sched_setaffinity(0, {cpus[-1]} if provider else set(cpus[:-1]))
    if provider:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        return f"CPU {cpus[-1]}, nice {os.getpriority(os.PRIO_PROCESS, 0)}"
    return f"CPUs {','.join(map(str, cpus[:-1]))}"


def serve(model_ms: float, classifier_ms: float, *, co_located: bool) -> None:
    """The fake provider (run in a subprocess): prints its base URL and where it runs, serves
    until stdin closes."""
    from persona_mw.testing import FakeOpenAIServer, echo_reply

    where = "shared cores, normal priority" if co_located else placement(provider=True)

    def reply(request: dict[str, Any]) -> str:
        time.sleep(model_ms / 1000)
        return echo_reply(request)

    def moderate(text: str) -> dict[str, float]:
        time.sleep(classifier_ms / 1000)
        return {}

    with FakeOpenAIServer(reply=reply, moderate=moderate, chunk_size=8) as server:
        print(server.base_url, flush=True)
        print(where, flush=True)
        sys.stdin.read()


async def main(
    base_url: str, calls: int, rounds: int, model_ms: float, classifier_ms: float, where: str
) -> None:
    import structlog

    from persona_mw import Middleware
    from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
    from persona_mw.bounds.classifiers import Classifiers, ClassifierSettings
    from persona_mw.types import CallContext

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())

    rule = {
        "id": "mod.violence",
        "tier": 1,
        "stage": "input",
        "detector": {"kind": "moderation", "categories": ["violence"], "timeout_s": 5},
        "message": "no",
    }
    kwargs = {"api_base": base_url, "api_key": "bench"}
    classifiers = Classifiers(ClassifierSettings(kwargs=kwargs, cache_ttl_s=0))

    waits: list[float] = []

    class Waited:
        """Keeps how long each call's engine waited for the verdict (``checks_wait``)."""

        name = "waited"

        async def __call__(self, ctx: CallContext) -> None:
            if ctx.checks:
                waits.append(ctx.timings_ms.get("checks_wait", 0.0))

    def build(rules: list[dict[str, Any]]) -> Middleware:
        policy = policy_from_dict({"version": "bench", "packs": ["crisis"], "rules": rules})
        return Middleware(
            input_stages=[BoundsInputStage(policy=policy, classifiers=classifiers)],
            output_stages=[BoundsOutputStage(policy=policy)],
            finish_stages=[Waited()],
        )

    baseline, moderated = build([]), build([rule])
    spec = moderated.input_stages[0].policy.rules[-1]  # type: ignore[attr-defined]

    cpu: dict[str, list[float]] = {}

    async def run(mw: Middleware, text: str, *, stream: bool, ask_first: bool) -> float:
        messages = [{"role": "user", "content": text}]
        started = time.perf_counter()
        cpu_started = time.process_time()
        if ask_first:  # the sequential reference: the verdict, then the model
            from persona_mw.bounds.moderation import moderate as ask

            await ask(text, spec.detector, model="openai/omni-moderation-latest", kwargs=kwargs)
        if stream:
            async for _ in mw.astream(
                user="bench", model="openai/fake", messages=messages, **kwargs
            ):
                pass
        else:
            await mw.acompletion(user="bench", model="openai/fake", messages=messages, **kwargs)
        cpu.setdefault(f"{mw is moderated}{ask_first}", []).append(
            (time.process_time() - cpu_started) * 1000
        )
        return (time.perf_counter() - started) * 1000

    variants = {
        "baseline": (baseline, False),
        "moderation": (moderated, False),
        "sequential": (baseline, True),
    }
    for stream in (False, True):
        for mw, first in variants.values():  # warm the HTTP clients and imports
            await run(mw, f"warm {stream} {first}", stream=stream, ask_first=first)
        cpu.clear()
        waits.clear()
        added: dict[str, list[float]] = {name: [] for name in variants}
        medians: dict[str, list[float]] = {name: [] for name in variants}
        # each call minus the baseline call beside it: the same moment's load on both
        paired: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            times: dict[str, list[float]] = {name: [] for name in variants}
            for i in range(calls):
                for name, (mw, first) in variants.items():
                    # padded: every variant's text (and so its echoed reply) the same length
                    text = f"question {r}-{i} for the {name:>10} path, streamed={stream}"
                    times[name].append(await run(mw, text, stream=stream, ask_first=first))
            for name in variants:
                paired[name].extend(
                    t - b for t, b in zip(times[name], times["baseline"], strict=True)
                )
                medians[name].append(statistics.median(times[name]))
                added[name].append(
                    statistics.median(times[name]) - statistics.median(times["baseline"])
                )
        label = "astream " if stream else "acompletion"
        print(
            f"{label}: model {model_ms:.0f} ms, classifier {classifier_ms:.0f} ms, "
            f"{calls} calls x {rounds} rounds; {where}"
        )
        for name, (mw, first) in variants.items():
            print(
                f"  {name:<11} median {statistics.median(medians[name]):8.2f} ms   "
                f"added vs baseline {statistics.median(added[name]):+7.2f} ms   "
                f"cpu/call {statistics.median(cpu[f'{mw is moderated}{first}']):6.2f} ms "
                f"(rounds: {', '.join(f'{a:+.2f}' for a in added[name])}; "
                f"paired, all calls: {statistics.median(paired[name]):+.2f})"
            )
        print(
            f"  engine wait for the verdict (checks_wait): median {statistics.median(waits):.3f} "
            f"ms, p90 {statistics.quantiles(waits, n=10)[-1]:.3f} ms over {len(waits)} calls"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-ms", type=float, default=120.0)
    parser.add_argument("--classifier-ms", type=float, default=30.0)
    parser.add_argument(
        "--co-located",
        action="store_true",
        help="the fake provider shares this process's cores at normal priority",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.model_ms, args.classifier_ms, co_located=args.co_located)
        sys.exit()
    provider = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            f"--model-ms={args.model_ms}",
            f"--classifier-ms={args.classifier_ms}",
            *(["--co-located"] if args.co_located else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert provider.stdout is not None and provider.stdin is not None
    try:
        base_url = provider.stdout.readline().strip()
        where = f"provider: {provider.stdout.readline().strip()}"
        if not args.co_located:
            where += f"; middleware: {placement(provider=False)}"
        asyncio.run(
            main(base_url, args.calls, args.rounds, args.model_ms, args.classifier_ms, where)
        )
    finally:
        provider.stdin.close()
        provider.wait(timeout=10)
