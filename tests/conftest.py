"""Shared fixtures: a real redis-server per test session, and a clean key prefix per test.

With ``REDIS_URL`` set the tests use that server, but only under a fresh random key prefix that
they delete afterwards; they never flush a database. Otherwise they start their own
``redis-server`` on a free loopback port (installing Debian's package when it is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio
import structlog


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server"], check=True, capture_output=True
        )
        found = shutil.which("redis-server")
        if found:
            return found
    pytest.exit(
        "redis-server is not installed and could not be installed; install it "
        "(apt-get install redis-server) or set REDIS_URL to a server the tests may use",
        returncode=3,
    )


class RedisServer:
    """A throwaway redis-server on loopback, killed at the end of the session."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="persona-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                _redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    """The session's own redis-server, or None when REDIS_URL points at an existing one."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return os.environ.get("REDIS_URL") or (redis_server.url if redis_server else "")


@contextlib.contextmanager
def fresh_key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards (and only those)."""
    prefix = f"pmwtest-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix for the test (see :func:`fresh_key_prefix`)."""
    with fresh_key_prefix(redis_url) as prefix:
        yield prefix


@pytest.fixture(scope="module")
def module_key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix for a module's shared server (see :func:`fresh_key_prefix`)."""
    with fresh_key_prefix(redis_url) as prefix:
        yield prefix


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _flush_litellm_logging_worker() -> AsyncIterator[None]:
    """LiteLLM runs success callbacks on a background worker; without a flush an event from one
    test reaches the next test's callback (stack.md)."""
    yield
    if "litellm" not in sys.modules:
        return
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await GLOBAL_LOGGING_WORKER.flush()


@pytest.fixture(autouse=True)
def _no_persona_environment_leaks() -> Iterator[None]:
    """The CLI run in-process (CliRunner) hands its config to server workers through
    ``PERSONA_MW_*`` variables; one test's must not become the next test's configuration."""
    before = {k: v for k, v in os.environ.items() if k.startswith("PERSONA_MW_")}
    yield
    for key in [k for k in os.environ if k.startswith("PERSONA_MW_")]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)


@pytest.fixture(autouse=True)
def _no_structlog_configuration_leaks() -> Iterator[None]:
    """A test that calls ``structlog.configure`` (or runs the demo or ``serve`` in-process, which
    configure logging) leaves structlog configured for every later test: the library's events
    then follow that configuration (to stdout, or to a buffer long gone) instead of stderr, and
    a later CLI test found a log line in the JSON it parses."""
    configured = structlog.is_configured()
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    if configured:
        structlog.configure(**saved)


@contextlib.contextmanager
def loop_in_thread() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """An event loop running in another thread, as LangChain's sync bridge runs one."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop, thread
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
