"""Fixtures for the LiteLLM-proxy plugin tests (helpers live in proxy_helpers.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from proxy_helpers import MASTER_KEY_ENV


@pytest.fixture(scope="module")
def module_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix shared by one module's proxy; its keys (only those) are deleted after."""
    prefix = f"pmwtest-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pmw-litellm-proxy-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def master_key() -> str:
    return os.environ.get(MASTER_KEY_ENV) or f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _flush_litellm_logging_worker() -> Iterator[None]:
    """Overrides the root conftest's fixture of this name for these tests: they make no LiteLLM
    calls in the test process (the proxy is another process), and on litellm 1.110
    ``GLOBAL_LOGGING_WORKER.flush()`` is a coroutine that the root fixture leaves un-awaited,
    which pytest turns into an error in sync tests."""
    yield
