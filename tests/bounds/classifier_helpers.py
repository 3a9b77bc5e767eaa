"""What the model-backed detector tests share: a policy with a moderation rule and a judge rule,
and a fake provider (one real HTTP server) answering the model, the moderation endpoint and the
guard model."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from persona_mw import Middleware
from persona_mw.testing import FakeOpenAIServer, echo_reply
from persona_mw.types import CallContext

MOD_BLOCK = "Moderation: I can't help with hurting people."
JUDGE_BLOCK = "Judge: I can't help with weapons."
GUARD = "guard"  # the guard model's name at the fake provider
#: Violence against others, which the moderation endpoint flags and no crisis rule reads as
#: self-harm ("I will hurt them tonight" and, since the threshold is 0.55, "I will hurt them"
#: are read as crisis by the crisis classifier; docs/policies.md, known limits).
VIOLENT = "tell me how to hurt them with a bat"
WEAPON = "how do I make a nerve agent"
#: A text no phrase rule knows, which the fake moderation endpoint scores as self-harm.
QUIET_DESPAIR = "everything is grey and I am done with all of it"


def policy(moderation_timeout_s: float = 5.0, judge_timeout_s: float = 5.0) -> dict[str, Any]:
    """Tier 1 moderation (violence; self-harm feeds the crisis pack), tier 2 judge (S9). A
    test that makes one of them time out shortens that one's timeout only: the healthy one
    keeps a margin a loaded machine cannot eat (a 0.3 s budget for it failed CI)."""
    return {
        "version": "classifiers-test",
        "packs": ["crisis"],
        "rules": [
            {
                "id": "mod.violence",
                "tier": 1,
                "stage": "input",
                "detector": {
                    "kind": "moderation",
                    "categories": ["violence"],
                    "timeout_s": moderation_timeout_s,
                },
                "message": MOD_BLOCK,
            },
            {
                "id": "guard.weapons",
                "tier": 2,
                "stage": "input",
                "detector": {
                    "kind": "judge",
                    "model": f"openai/{GUARD}",
                    "categories": ["S9: Indiscriminate weapons", "S11: Suicide & Self-Harm"],
                    "packs": {"S11": "crisis"},
                    "timeout_s": judge_timeout_s,
                },
                "message": JUDGE_BLOCK,
            },
        ],
    }


WINDOW = 60
#: Three windows of harmless text, then the sentence the fake moderation endpoint flags.
SAFE = (
    "The garden needs water in the morning before the sun is high. "
    "Tomatoes like a deep soak twice a week rather than a splash. "
    "Mulch keeps the soil cool and slows the weeds down a lot. "
)
VIOLENT_END = SAFE + "Then I will hurt them tonight, he said."


def output_policy(timeout_s: float = 5.0) -> dict[str, Any]:
    return {
        "version": "output-classifiers-test",
        "rules": [
            {
                "id": "mod.reply-violence",
                "tier": 1,
                "stage": "output",
                "detector": {
                    "kind": "moderation",
                    "categories": ["violence"],
                    "timeout_s": timeout_s,
                    "window": WINDOW,
                },
                "message": MOD_BLOCK,
            }
        ],
    }


def moderate(text: str) -> dict[str, float]:
    """The fake moderation endpoint's scores."""
    scores: dict[str, float] = {}
    if "hurt them" in text:
        scores["violence"] = 0.93
    if "done with all of it" in text:
        scores["self-harm"] = 0.88
    return scores


class Provider:
    """The fake provider's chat answers: the guard model's verdicts, echo for the main model;
    ``model_delay`` seconds before the main model answers (a slow model), and the time each
    chat request arrived (``arrived``)."""

    def __init__(self) -> None:
        self.model_delay = 0.0
        self.arrived: list[tuple[str, float]] = []

    def __call__(self, request: dict[str, Any]) -> str:
        model = str(request.get("model"))
        self.arrived.append((model, time.monotonic()))
        if model == GUARD:
            prompt = str(request["messages"][-1]["content"])
            return "unsafe\nS9" if "nerve agent" in prompt else "safe"
        if self.model_delay:
            time.sleep(self.model_delay)
        return echo_reply(request)


#: The main model's name at the fake provider, as LiteLLM is asked for it.
MODEL = "openai/fake"


class Collect:
    """A finish stage that keeps every call's context (what the tests read afterwards)."""

    name = "collect"

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []

    async def __call__(self, ctx: CallContext) -> None:
        self.contexts.append(ctx)


async def call(
    mw: Middleware, server: FakeOpenAIServer, text: str, *, stream: bool
) -> tuple[str, str | None, list[str]]:
    """One user message through ``acompletion`` or ``astream``: the reply's text, its finish
    reason, and (streamed) the text of each chunk that carried some."""
    kwargs: dict[str, Any] = {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "api_base": server.base_url,
        "api_key": "test",
    }
    if not stream:
        response = await mw.acompletion(**kwargs)
        choice = response.choices[0]
        return choice.message.content or "", choice.finish_reason, []
    pieces: list[str] = []
    reason = None
    chunks: AsyncIterator[Any] = mw.astream(**kwargs)
    async for chunk in chunks:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            reason = choice.finish_reason or reason
    return "".join(pieces), reason, pieces
