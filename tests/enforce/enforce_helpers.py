"""Helpers for the engine tests: the policy, a middleware on it, one call's arguments."""

from __future__ import annotations

from persona_mw import Middleware, Settings
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.testing import FakeOpenAIServer

MODEL = "openai/fake"
CARD = "4111 1111 1111 1111"
BLOCKED = "Withheld by policy."

#: The pii pack (redact) and a tier-1 output block on "secret method".
POLICY = {
    "version": "enforce-test",
    "packs": ["pii"],
    "rules": [
        {
            "id": "t.method",
            "tier": 1,
            "stage": "output",
            "detector": {"kind": "phrases", "phrases": ["secret method"]},
            "action": "block",
            "message": BLOCKED,
        }
    ],
}


def middleware(**settings: object) -> Middleware:
    policy = policy_from_dict(POLICY)
    return Middleware(
        input_stages=[BoundsInputStage(policy=policy)],
        output_stages=[BoundsOutputStage(policy=policy)],
        settings=Settings(**settings),  # type: ignore[arg-type]
    )


def call(upstream: FakeOpenAIServer, **kwargs: object) -> dict[str, object]:
    return {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "api_base": upstream.base_url,
        "api_key": "test",
        **kwargs,
    }
