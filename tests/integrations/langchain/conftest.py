"""Fixtures for the LangChain tests: a middleware with small real stages, and a fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_stages import Recorder, make_middleware

from persona_mw import Middleware
from persona_mw.testing import FakeOpenAIServer


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def mw(recorder: Recorder) -> Middleware:
    return make_middleware(recorder)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server


class TokenSpy(BaseCallbackHandler):
    """Every token LangChain's callbacks are given: what LangGraph's ``stream_mode="messages"``
    and any streaming UI would show the user."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


@pytest.fixture
def spy() -> TokenSpy:
    return TokenSpy()
