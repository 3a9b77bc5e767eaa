"""The enforcement engine's own cost per reply, beside the bare filter chain it drives.

    .venv/bin/python benchmarks/bench_enforce.py [--replies 300] [--rounds 7]

Side by side in one run, interleaved reply by reply, on a 600-character reply with the
pii pack and the baseline packs as output rules (the same filters in every variant):
  chain whole    FilterChain.feed(text) + finish()                (the old enforce_reply's work)
  engine whole   ReplyEnforcer.whole(0, Piece(content=text))
  chain stream   FilterChain.feed per 4-character chunk, finish()  (the old stream loop's work)
  engine stream  ReplyEnforcer.feed(0, Piece(...)) per chunk, then the finishing piece
  engine n=2     two choices interleaved per chunk (one filter each): twice the work, by design
Figures: median CPU µs (``time.process_time``: the machine is shared, and wall time charged
other processes' slices to whichever variant was running) per reply over rounds (each round's
median), and the ratio engine / chain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPLY = (
    "Keep a fixed wake-up time, get daylight in the morning, and stop screens an hour before "
    "bed. If you want, write to me at someone@example.org or call +1 415 555 0100 later. "
) * 4
CHUNK = 4


async def main(replies: int, rounds: int) -> None:
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    from persona_mw import Middleware, Settings
    from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
    from persona_mw.enforce import Piece

    policy = policy_from_dict(
        {"version": "bench", "packs": ["pii", "crisis", "ai-disclosure", "minor-safety"]}
    )
    mw = Middleware(
        input_stages=[BoundsInputStage(policy=policy)],
        output_stages=[BoundsOutputStage(policy=policy)],
        settings=Settings(hash_secret="bench"),
    )
    messages = [{"role": "user", "content": "hello"}]
    ctx = await mw.begin("ada", "openai/x", messages, {}, stream=True, surface="python")
    await mw.run_input_stages(ctx)
    text = REPLY[:600]
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]

    def chain_whole() -> None:
        chain = mw.open_filters(ctx)
        chain.feed(text)
        chain.finish()

    def engine_whole() -> None:
        mw.enforcer(ctx).whole(0, Piece(content=text, finish_reason="stop"))

    def chain_stream() -> None:
        chain = mw.open_filters(ctx)
        for c in chunks:
            chain.feed(c)
        chain.finish()

    def engine_stream() -> None:
        enforcer = mw.enforcer(ctx)
        for c in chunks:
            enforcer.feed(0, Piece(content=c))
        enforcer.feed(0, Piece(finish_reason="stop"))

    def engine_two() -> None:
        enforcer = mw.enforcer(ctx)
        for c in chunks:
            enforcer.feed(0, Piece(content=c))
            enforcer.feed(1, Piece(content=c))
        enforcer.feed(0, Piece(finish_reason="stop"))
        enforcer.feed(1, Piece(finish_reason="stop"))

    variants: dict[str, Callable[[], None]] = {
        "chain whole": chain_whole,
        "engine whole": engine_whole,
        "chain stream": chain_stream,
        "engine stream": engine_stream,
        "engine n=2 stream": engine_two,
    }
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(replies):
            names = list(variants)
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                ctx.decisions.clear()
                ctx.notices.clear()
                started = time.process_time()
                variants[name]()
                samples[name].append((time.process_time() - started) * 1e6)
        for name, values in samples.items():
            per_round[name].append(statistics.median(values))
    result = {name: statistics.median(values) for name, values in per_round.items()}
    print("| variant | median CPU µs per 600-char reply | ratio |\n|---|---:|---:|")
    for name, value in result.items():
        base = result["chain whole" if "whole" in name else "chain stream"]
        print(f"| {name} | {value:.1f} | {value / base:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.replies, args.rounds))
