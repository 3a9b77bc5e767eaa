"""Bounds: scanning throughput, and what output bounds add to a streamed reply.

    .venv/bin/python benchmarks/bench_bounds.py [--mb 2] [--rounds 7]

Side by side in one run, figures are medians over rounds:

1. Throughput (MB/s of output text) of the output scanner with the ``pii`` pack plus 1,000
   phrase rules (one phrase each, all compiled into one automaton), on English model-like
   output (ASCII) and on accented text (the non-ASCII folding path). Three ways: the scanner on
   the whole text; the stream filter fed the whole text at once (the non-streamed path); the
   stream filter fed 16-character chunks (each window is rescanned: the cost of streaming).
2. A streamed reply (2,000 characters in 4-character chunks, like tokens) through the stream
   filter vs the same chunks through no filter: processing time added before the first released
   text (the time-to-first-token cost beyond waiting for the hold-back to fill) and in total.
3. End to end: ``Middleware.astream`` with LiteLLM's ``mock_response`` streaming, with the
   bounds stages vs with none, interleaved call by call: added time to first text and total.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import string
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona_mw.bounds import StreamFilter, policy_from_dict, resolve
from persona_mw.bounds.scan import hold_back_for
from persona_mw.profile import Profile

PROSE = [
    "The model answers your question in a few short paragraphs. ",
    "Keep a fixed wake-up time, get daylight in the morning, and stop screens before bed. ",
    "In 2024 the company shipped 1,250 orders, up 12.5% on the year before. ",
    "Step 3: open the settings page and choose Privacy, then Data.\n\n",
    "A classic assassin from Scunthorpe passed the class with flying colours. ",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. ",
    "If the build fails, run the tests again with the verbose flag and read the first error. ",
    "Here is a short list:\n- flour\n- sugar\n- two eggs\n\n",
    "The French Revolution began in 1789 and changed European politics for a century. ",
    "To convert Celsius to Fahrenheit, multiply by 9/5 and add 32. ",
    "Most people need seven to nine hours of sleep; teenagers need a little more. ",
    "The function returns None when the key is missing, so check before you index. ",
]
PII = [
    "You can reach the support team at help@example.com or on +44 20 7946 0958. ",
    "Pay to GB82 WEST 1234 5698 7654 32 by Friday. ",
]
#: Model-like output: prose with a sentence of personal data about every 40 sentences.
SENTENCES = PROSE * 20 + PII
ACCENTED = [
    "Le café crème coûte 3,50 € à Genève; naïve façade, déjà vu. ",
    "Mañana el niño comerá jamón ibérico en la montaña. ",
    "Ça coûte très cher, mais l'été à Noël reste à côté. ",
]
#: German: "ß" folds to "ss" (two characters), so offsets need the exact path around it.
GERMAN = ["Straße, Größe, Übermaß und Äpfel: schöne Grüße aus München. "]


def make_policy() -> object:
    rng = random.Random(7)
    words = set()
    while len(words) < 1000:
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 11))))
    rules = [
        {
            "id": f"phrase-{i}",
            "tier": 2,
            "stage": "output",
            "detector": {"kind": "phrases", "phrases": [word if i % 4 else f"{word} {word[::-1]}"]},
            "action": "redact",
        }
        for i, word in enumerate(sorted(words))
    ]
    return policy_from_dict({"version": "bench", "packs": ["pii"], "rules": rules})


def make_text(pool: list[str], size: int) -> str:
    rng = random.Random(1)
    parts: list[str] = []
    total = 0
    while total < size:
        part = rng.choice(pool)
        parts.append(part)
        total += len(part)
    return "".join(parts)[:size]


def best_of(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    # CPU time, as bench_detection measures: on the shared 2-core machine wall time mostly
    # measures the other processes; the scan is single-threaded and never waits
    times = []
    for _ in range(rounds):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return statistics.median(times)


def throughput(scanner, hold_back: int, text: str, rounds: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    mb = len(text.encode()) / 1e6

    def whole() -> None:
        scanner.scan(text)

    def one_chunk() -> None:
        f = StreamFilter(scanner, None, hold_back=hold_back)
        f.feed(text)
        f.finish()

    sample = text[: len(text) // 8]  # chunked streaming is slower: measure on an eighth

    def chunked() -> None:
        f = StreamFilter(scanner, None, hold_back=hold_back)
        for i in range(0, len(sample), 16):
            f.feed(sample[i : i + 16])
        f.finish()

    return {
        "scan whole text": mb / best_of(whole, rounds),
        "filter, one chunk": mb / best_of(one_chunk, rounds),
        "filter, 16-char chunks": mb / 8 / best_of(chunked, rounds),
    }


def stream_costs(scanner, hold_back: int, rounds: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    reply = make_text(SENTENCES, 2000)
    chunks = [reply[i : i + 4] for i in range(0, len(reply), 4)]
    first_ms, total_ms, base_first_ms, base_total_ms = [], [], [], []
    for _ in range(rounds * 20):
        # baseline: the same chunks, released as they come
        started = time.perf_counter()
        out = []
        for i, chunk in enumerate(chunks):
            out.append(chunk)
            if i == 0:
                base_first_ms.append((time.perf_counter() - started) * 1000)
        base_total_ms.append((time.perf_counter() - started) * 1000)

        f = StreamFilter(scanner, None, hold_back=hold_back)
        spent = 0.0
        first = None
        for chunk in chunks:
            t = time.perf_counter()
            released = f.feed(chunk)
            spent += time.perf_counter() - t
            if released and first is None:
                first = spent * 1000  # filter time spent up to the first released text
        t = time.perf_counter()
        f.finish()
        spent += time.perf_counter() - t
        first_ms.append(first or 0.0)
        total_ms.append(spent * 1000)
    return {
        "added before first text (ms)": statistics.median(first_ms)
        - statistics.median(base_first_ms),
        "added in total (ms)": statistics.median(total_ms) - statistics.median(base_total_ms),
        "chunks": len(chunks),
    }


async def end_to_end(policy, calls: int, needed: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import structlog

    from persona_mw import Middleware
    from persona_mw.bounds import BoundsInputStage, BoundsOutputStage

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    reply = make_text(SENTENCES, 600)
    messages = [{"role": "user", "content": "tell me"}]
    plain = Middleware()
    bounded = Middleware(
        input_stages=[BoundsInputStage(policy=policy)],
        output_stages=[BoundsOutputStage(policy=policy)],
    )

    async def one(mw: Middleware) -> tuple[float, float, float]:
        """(first text, when `needed` characters had arrived, total) in ms."""
        started = time.perf_counter()
        first = filled = None
        seen = 0
        async for chunk in mw.astream(
            user="u", model="openai/bench", messages=messages, mock_response=reply
        ):
            content = chunk.choices[0].delta.content if chunk.choices else None
            if content:
                seen += len(content)
                if first is None:
                    first = time.perf_counter() - started
                if filled is None and seen >= needed:
                    filled = time.perf_counter() - started
        total = time.perf_counter() - started
        return (first or 0.0) * 1000, (filled or total) * 1000, total * 1000

    await one(plain), await one(bounded)  # warm up LiteLLM's streaming path
    d_first, d_total, p_first, p_total, beyond = [], [], [], [], []
    for i in range(calls):
        order = (plain, bounded) if i % 2 else (bounded, plain)
        results = {}
        for mw in order:
            results[id(mw)] = await one(mw)
        pf, p_filled, pt = results[id(plain)]
        bf, _, bt = results[id(bounded)]
        p_first.append(pf)
        p_total.append(pt)
        d_first.append(bf - pf)
        d_total.append(bt - pt)
        # the bounded stream can release only once its first word is settled: what it adds
        # beyond the first text's arrival is the wait for that plus the bounds' own cost
        beyond.append(bf - p_filled)
    return {
        "no bounds: first text (ms)": statistics.median(p_first),
        "no bounds: total (ms)": statistics.median(p_total),
        "added first text (ms)": statistics.median(d_first),
        "added first text beyond its arrival (ms)": statistics.median(beyond),
        "added total (ms)": statistics.median(d_total),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    policy = make_policy()
    scanner = resolve(policy, Profile(user_id="bench")).output  # type: ignore[arg-type]
    hold_back = hold_back_for(scanner)
    size = int(args.mb * 1e6)
    print(f"output rules: pii pack + 1,000 phrase rules; hold-back {hold_back} characters")
    print(f"Python {sys.version.split()[0]}, median of {args.rounds} rounds (CPU time)\n")

    print("| text | way | MB/s |\n|---|---|---|")
    pools = (
        ("English (ASCII)", SENTENCES),
        ("English, PII in every 2nd sentence", PROSE + PII * 6),
        ("French/Spanish (accented)", ACCENTED),
        ("German (with ß)", GERMAN + ACCENTED),
    )
    for name, pool in pools:
        for way, rate in throughput(scanner, hold_back, make_text(pool, size), args.rounds).items():
            print(f"| {name} | {way} | {rate:.1f} |")

    costs = stream_costs(scanner, hold_back, args.rounds)
    print(f"\nstream filter on a 2,000-character reply in {costs.pop('chunks'):.0f} chunks:")
    for key, value in costs.items():
        print(f"  {key}: {value:.3f}")

    e2e = asyncio.run(end_to_end(policy, args.calls, 1))
    print(f"\nMiddleware.astream, LiteLLM mock stream of 600 characters, {args.calls} pairs:")
    for key, value in e2e.items():
        print(f"  {key}: {value:.3f}")


if __name__ == "__main__":
    main()
