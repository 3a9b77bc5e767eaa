"""Cost of the personalise stage per request, in microseconds, beside a no-op input stage.

    .venv/bin/python benchmarks/bench_personalise.py [--calls 2000] [--rounds 7]

Variants, interleaved call by call (rotating order) so machine noise hits all alike; each call
gets a fresh CallContext (built outside the timed region):
  noop          an input stage that returns at once (the floor: one await)
  no-consent    PersonaliseStage, profile without consent, no tier instructions (no change)
  bounds-only   no consent, 2 tier instructions: only the bounds block is added
  full          full profile + 2 tier instructions, gpt-4o-mini (LiteLLM token counter; the
                token counts are memoised, so this is a returning user)
  full-cold     the same, but each call's own rules differ (a new user: token counts miss
                the memo for the personal block)
  full-alias    the same for a model name LiteLLM does not know (chars/4 estimate)
  full-folded   the same for a model without a system role (folded into the first user turn)
  over-budget   full profile with long own rules and self-description, budget 250: parts drop
  replay        the full variant fed its own earlier prompt plus two more turns (strip first)
Per round: the median per call; reported: the median over rounds, and the ratio to noop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona_mw.personalise import PersonaliseConfig, PersonaliseStage
from persona_mw.profile import Profile, parse_profile
from persona_mw.types import CallContext, Instruction, Message

FULL: dict[str, Any] = {
    "user_id": "ana",
    "version": 3,
    "display_name": "Ana",
    "own_rules": "Always give one concrete example. Avoid idioms; I read English as a second "
    "language.",
    "self_description": "I am a night-shift nurse in Madrid; I like hiking and learning Python.",
    "topics_to_avoid": ["football", "celebrity gossip"],
    "style": {
        "tone": "friendly",
        "verbosity": "terse",
        "language": "es",
        "expertise": "novice",
        "format": "bullets",
    },
    "preferences": {"factuality": 95, "creativity": 10, "diversity": 85},
    "consent": {"personalisation": True, "memory": True},
}
TIERS = [
    Instruction(
        1, "law.crisis", "If the user expresses thoughts of self-harm, give crisis line details."
    ),
    Instruction(
        2, "deployer.viewpoints", "Present several viewpoints on contested political topics."
    ),
]
APP: list[Message] = [
    {"role": "system", "content": "You are HelpBot for Example Corp."},
    {"role": "user", "content": "How can I sleep better?"},
]


class Noop:
    name = "noop"

    async def __call__(self, ctx: CallContext) -> None:
        return None


def context(
    profile: Profile, messages: list[Message], model: str, tiers: bool = True
) -> CallContext:
    return CallContext(
        request_id="r",
        user_id=profile.user_id,
        user_hash="h",
        model=model,
        messages=messages,
        prompt_messages=list(messages),
        stream=False,
        llm_kwargs={},
        profile=profile,
        profile_source="cache",
        started_at=datetime.now(UTC),
        instructions=list(TIERS) if tiers else [],
    )


async def main(calls: int, rounds: int) -> None:
    full = parse_profile(FULL)
    long = parse_profile(
        {**FULL, "own_rules": "Be exact. " * 150, "self_description": "I like many things. " * 90}
    )
    stage = PersonaliseStage()
    tight = PersonaliseStage(config=PersonaliseConfig(budget_tokens=250))
    first = context(full, APP, "gpt-4o-mini")
    await stage(first)
    replayed = [
        *first.prompt_messages,
        {"role": "assistant", "content": "Keep a schedule."},
        {"role": "user", "content": "And naps?"},
    ]
    bob = parse_profile({"user_id": "bob"})
    serial = itertools.count()

    def new_user() -> Profile:
        return parse_profile({**FULL, "own_rules": f"{FULL['own_rules']} #{next(serial)}"})

    def same(profile: Profile) -> Callable[[], Profile]:
        return lambda: profile

    variants: dict[str, tuple[Any, Callable[[], Profile], list[Message], str, bool]] = {
        "noop": (Noop(), same(full), APP, "gpt-4o-mini", True),
        "no-consent": (stage, same(bob), APP, "gpt-4o-mini", False),
        "bounds-only": (stage, same(bob), APP, "gpt-4o-mini", True),
        "full": (stage, same(full), APP, "gpt-4o-mini", True),
        "full-cold": (stage, new_user, APP, "gpt-4o-mini", True),
        "full-alias": (stage, same(full), APP, "my-router-alias", True),
        "full-folded": (stage, same(full), APP, "gemini/gemma-3-27b-it", True),
        "over-budget": (tight, same(long), APP, "gpt-4o-mini", True),
        "replay": (stage, same(full), replayed, "gpt-4o-mini", True),
    }
    for run, prof, messages, model, tiers in variants.values():  # warm tokenizers, facts
        for _ in range(50):
            await run(context(prof(), messages, model, tiers))
    names = list(variants)
    medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        samples: dict[str, list[float]] = {n: [] for n in names}
        for i in range(calls):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                run, prof, messages, model, tiers = variants[name]
                ctx = context(prof(), messages, model, tiers)
                started = time.perf_counter()
                await run(ctx)
                samples[name].append((time.perf_counter() - started) * 1e6)
        for name in names:
            medians[name].append(statistics.median(samples[name]))
    base = statistics.median(medians["noop"])
    print(f"calls per variant per round: {calls}, rounds: {rounds} (median of round medians)")
    print(f"{'variant':<13} {'µs/request':>11} {'x noop':>8} {'min..max of rounds':>22}")
    for name in names:
        value = statistics.median(medians[name])
        spread = f"{min(medians[name]):.1f}..{max(medians[name]):.1f}"
        print(f"{name:<13} {value:>11.1f} {value / base:>8.1f} {spread:>22}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
