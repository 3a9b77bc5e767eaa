"""Shared builders for the personalisation tests: profiles, tier instructions, a CallContext."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from persona_mw.profile import Profile, parse_profile
from persona_mw.types import CallContext, Instruction, Message

TIER1 = Instruction(
    tier=1,
    source="law.crisis_protocol",
    text="If the user expresses thoughts of self-harm, stop and give crisis line details.",
)
TIER2 = Instruction(
    tier=2,
    source="deployer.viewpoint_diversity",
    text="Present several viewpoints on contested political topics.",
)
MINOR = Instruction(
    tier=2,
    source="deployer.minor_persona",
    text="The user is a minor: do not take on a romantic or relationship-seeking persona.",
)
TIERS = (TIER2, TIER1)  # given out of order on purpose: tier 1 must still come first

SYSTEM_MODEL = "gpt-4o-mini"
#: LiteLLM's model list says this model takes no system message ("supports_system_messages":
#: false); tests assert that with litellm itself before relying on it.
NO_SYSTEM_MODEL = "gemini/gemma-3-27b-it"

FULL: dict[str, Any] = {
    "user_id": "ana",
    "version": 7,
    "display_name": "Ana",
    "own_rules": "Always give one concrete example. Mention ZEBRA-ONE when you can.",
    "self_description": "I am a night-shift nurse in Madrid and I like hiking.",
    "topics_to_avoid": ["football", "celebrity gossip"],
    "style": {
        "tone": "friendly",
        "verbosity": "terse",
        "language": "es",
        "expertise": "novice",
        "format": "bullets",
    },
    "preferences": {"factuality": 95, "creativity": 10, "safety": 5, "diversity": 50},
    "consent": {"personalisation": True, "memory": True},
}


def profile(**changes: Any) -> Profile:
    """The full profile with top-level fields replaced (``consent=`` etc.)."""
    return parse_profile({**FULL, **changes})


def context(
    prof: Profile,
    messages: list[Message] | None = None,
    *,
    model: str = SYSTEM_MODEL,
    instructions: tuple[Instruction, ...] = (),
    reduced: bool = False,
) -> CallContext:
    messages = messages if messages is not None else [{"role": "user", "content": "hi"}]
    ctx = CallContext(
        request_id="r1",
        user_id=prof.user_id,
        user_hash="h-" + prof.user_id,
        model=model,
        messages=messages,
        prompt_messages=list(messages),
        stream=False,
        llm_kwargs={},
        profile=prof,
        profile_source="store",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        instructions=list(instructions),
    )
    ctx.exposure.reduced = reduced
    return ctx


def block(text: str, tag: str) -> str | None:
    """The ``<tag>...</tag>`` block in ``text`` (tags included), or None."""
    found = re.search(f"<{re.escape(tag)}>.*?</{re.escape(tag)}>", text, re.S)
    return found[0] if found else None


def added_text(messages: list[Message]) -> str:
    """All text of system messages and the first user message: where our blocks go."""
    texts = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    first_user = next((m for m in messages if m["role"] == "user"), None)
    if first_user is not None:
        texts.append(first_user["content"])
    return "\n".join(t if isinstance(t, str) else str(t) for t in texts)
