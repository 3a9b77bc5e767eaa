"""Fixtures for the server tests: a fake upstream, and our server in a thread on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS, model_entry, write_config

from persona_mw.testing import FakeOpenAIServer


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """Our server with API keys, routing model "fake" to the fake upstream."""
    path = write_config(
        tmp_path_factory.mktemp("server") / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        server={"api_keys": KEYS.config()},
    )
    with ServerThread(create_app(load_server_config(path))) as running:
        yield running


@pytest.fixture(scope="module")
def open_server() -> Iterator[ServerThread]:
    """Our server on embedded defaults: no config, no keys, the offline demo model."""
    with ServerThread(create_app()) as running:
        yield running


@pytest.fixture(autouse=True)
def _flush_litellm_logging_worker() -> Iterator[None]:
    """Overrides the root conftest's fixture of the same name: in litellm 1.110
    ``GLOBAL_LOGGING_WORKER.flush()`` is a coroutine, so calling it un-awaited there raises an
    unraisable-coroutine warning (an error under our filterwarnings). The servers here run
    litellm on their own event loop in another thread, and no test reads litellm callbacks."""
    yield


_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """litellm's streaming path emits a pydantic UserWarning about a ReadOnly TypedDict item on
    first use (litellm 1.110); under ``filterwarnings = error`` it would fail the call inside the
    server thread. Not ours to fix; ignored for these tests only."""
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"))
