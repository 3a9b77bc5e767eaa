"""The enforcement engine, driven through the real Middleware, real LiteLLM and a real local
upstream (``FakeOpenAIServer``) that sends n choices, tool calls, reasoning and logprobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from persona_mw import Middleware
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
    from persona_mw import Settings

    policy = policy_from_dict(POLICY)
    return Middleware(
        input_stages=[BoundsInputStage(policy=policy)],
        output_stages=[BoundsOutputStage(policy=policy)],
        settings=Settings(**settings),  # type: ignore[arg-type]
    )


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server


def call(upstream: FakeOpenAIServer, **kwargs: object) -> dict[str, object]:
    return {
        "user": "ada",
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "api_base": upstream.base_url,
        "api_key": "test",
        **kwargs,
    }
