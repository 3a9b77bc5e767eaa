"""The enforcement engine, driven through the real Middleware, real LiteLLM and a real local
upstream (``FakeOpenAIServer``) that sends n choices, tool calls, reasoning and logprobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from persona_mw.testing import FakeOpenAIServer


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server
