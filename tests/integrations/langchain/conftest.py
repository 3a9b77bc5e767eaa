"""Fixtures for the LangChain tests: a middleware with small real stages, and a fake upstream.

Every middleware a test opens is closed after it (``await mw.aclose()``, which also finishes
what sync calls left on persona_mw_langchain's private loop), so no usage writer is left
pending when the interpreter exits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import pytest
from langchain_stages import Recorder, TokenSpy, make_middleware

from persona_mw import Middleware
from persona_mw.testing import FakeOpenAIServer


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def mw(recorder: Recorder) -> AsyncIterator[Middleware]:
    async with make_middleware(recorder) as middleware:
        yield middleware


@pytest.fixture
async def closing() -> AsyncIterator[AsyncExitStack]:
    """For middlewares a test makes itself: ``closing.push_async_callback(mw.aclose)`` closes
    ``mw`` after the test (also from a sync test)."""
    async with AsyncExitStack() as stack:
        yield stack


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server


@pytest.fixture
def spy() -> TokenSpy:
    return TokenSpy()
