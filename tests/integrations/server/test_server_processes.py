"""`persona-mw serve` as a real process: two workers sharing a Redis store, and a graceful
shutdown that lets an open stream finish."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from persona_mw_server.testing import ServerProcess
from server_helpers import KEYS, SlowUpstream, bearer, model_entry, write_config

from persona_mw import build_middleware, load_config
from persona_mw.testing import FakeOpenAIServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_workers(
    redis_url: str, module_key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, FakeOpenAIServer]]:
    prefix = module_key_prefix
    folder = tmp_path_factory.mktemp("workers")
    with FakeOpenAIServer() as upstream:
        path = write_config(
            folder / "persona.yaml",
            model_list=[model_entry(upstream.base_url)],
            store={"url": redis_url, "prefix": prefix},
            settings={"hash_secret": "test-secret"},
            server={"api_keys": KEYS.config()},
        )
        with ServerProcess(path, args=["--workers", "2"], log_path=folder / "server.log") as server:
            yield server, upstream


def fresh(method: str, url: str, **kw: object) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to either worker."""
    with httpx.Client(headers={"Connection": "close"}) as client:
        return client.request(method, url, **kw)  # type: ignore[arg-type]


def test_profile_update_through_one_worker_is_seen_by_the_other(
    two_workers: tuple[ServerProcess, FakeOpenAIServer],
) -> None:
    server, _ = two_workers
    url, admin = server.base_url + "/v1/users/ada/profile", bearer(KEYS.admin)
    assert fresh("PUT", url, json={"own_rules": "first"}, headers=admin).status_code == 200

    def read_all(at_least: int) -> tuple[set[str], set[int]]:
        """Read `at_least` times, then on until both workers have answered: which worker
        accepts a new connection is the kernel's choice, and on a loaded machine one worker
        can take forty in a row."""
        instances: set[str] = set()
        versions: set[int] = set()
        deadline = time.monotonic() + 30
        reads = 0
        while reads < at_least or (len(instances) < 2 and time.monotonic() < deadline):
            response = fresh("GET", url, headers=admin)
            instances.add(response.headers["x-persona-instance"])
            versions.add(response.json()["version"])
            reads += 1
        return instances, versions

    warmed, before = read_all(40)  # both workers now hold version 1 in their caches
    assert len(warmed) == 2, "both workers must have served (and cached) the profile"
    updated = fresh("PATCH", url, json={"own_rules": "second"}, headers=admin)
    assert updated.json()["version"] == before.pop() + 1
    time.sleep(0.1)
    served_by, after = read_all(40)
    assert len(served_by) == 2 and after == {updated.json()["version"]}


_personalisation_wired = bool(build_middleware(load_config(None)).input_stages)


@pytest.mark.xfail(
    not _personalisation_wired,
    strict=True,
    reason="no personalisation stage is wired into build_middleware yet",
)
def test_the_personalised_prompt_follows_the_update(
    two_workers: tuple[ServerProcess, FakeOpenAIServer],
) -> None:
    server, upstream = two_workers
    url, admin = server.base_url + "/v1/users/bea/profile", bearer(KEYS.admin)
    chat = {"model": "fake", "user": "bea", "messages": [{"role": "user", "content": "hi"}]}

    def prompts(at_least: int) -> tuple[set[str], str]:
        """Chat `at_least` times, then on until both workers have answered (see read_all)."""
        instances: set[str] = set()
        deadline = time.monotonic() + 30
        sent = 0
        while sent < at_least or (len(instances) < 2 and time.monotonic() < deadline):
            response = fresh(
                "POST",
                server.base_url + "/v1/chat/completions",
                json=chat,
                headers=bearer(KEYS.app),
            )
            instances.add(response.headers["x-persona-instance"])
            sent += 1
        return instances, json.dumps(upstream.requests[-sent:])

    fresh(
        "PUT",
        url,
        json={"consent": {"personalisation": True}, "own_rules": "Always mention ZEBRA-ONE."},
        headers=admin,
    )
    _, before = prompts(20)
    assert "ZEBRA-ONE" in before
    fresh("PATCH", url, json={"own_rules": "Always mention ZEBRA-TWO."}, headers=admin)
    time.sleep(0.1)
    served_by, after = prompts(30)
    assert len(served_by) == 2 and "ZEBRA-TWO" in after and "ZEBRA-ONE" not in after


def test_graceful_shutdown_drains_an_open_stream(tmp_path: Path) -> None:
    """SIGTERM while a stream is open: the stream still ends with [DONE], then the process exits
    cleanly after flushing (the middleware's aclose runs: 'server.stopped' is logged last)."""
    with SlowUpstream(chunks=40, interval=0.025) as slow:
        path = write_config(tmp_path / "persona.yaml", model_list=[model_entry(slow.base_url)])
        log = tmp_path / "server.log"
        server = ServerProcess(path, log_path=log).start()
        try:
            body = {
                "model": "fake",
                "user": "u",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            lines = []
            with httpx.stream(
                "POST", server.base_url + "/v1/chat/completions", json=body, timeout=10
            ) as response:
                for line in response.iter_lines():
                    if line and not lines:
                        server.terminate()
                    if line:
                        lines.append(line)
            assert lines[-1] == "data: [DONE]"
            text = "".join(
                (json.loads(line[6:])["choices"] or [{"delta": {}}])[0]["delta"].get("content")
                or ""
                for line in lines[:-1]
            )
            assert text == "word " * 40, "every chunk sent before SIGTERM reached the client"
            # uvicorn re-raises the SIGTERM it handled after shutting down: status "terminated"
            assert server.proc is not None and server.proc.wait(10) in (0, -15)
        finally:
            server.stop()
        events = [
            json.loads(line)["event"]
            for line in log.read_text().splitlines()
            if line.startswith("{")
        ]
        assert "request.completed" in events and events[-1] == "server.stopped"


def test_each_worker_freezes_what_start_up_built(
    two_workers: tuple[ServerProcess, FakeOpenAIServer],
) -> None:
    """`persona-mw serve` freezes the start-up heap in every worker (the garbage collector's
    full collections then skip LiteLLM and the scanners): each worker's `server.started` says
    how many objects it froze."""
    server, _ = two_workers
    assert server.log_path is not None
    started = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{") and '"server.started"' in line
    ]
    assert len(started) == 2, started
    assert all(event["frozen_objects"] > 100_000 for event in started), started
