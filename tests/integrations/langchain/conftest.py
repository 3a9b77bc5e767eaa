"""Fixtures for the LangChain tests: a middleware with small real stages, and a fake upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_stages import Recorder, TokenSpy, make_middleware

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


@pytest.fixture
def spy() -> TokenSpy:
    return TokenSpy()
