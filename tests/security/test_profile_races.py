"""Deployer-owned profile fields (age band, known minor) under concurrency, through the real
server on a real redis-server: no interleaving of a user's own deletes, erasures and updates may
leave a minor the deployer marked unprotected, and a user's first write starts from the
deployment's default profile, not from a blank one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from sec_helpers import KEYS, bearer, write_server_config

from persona_mw.testing import FakeOpenAIServer

SEXUAL = {"model": "fake", "messages": [{"role": "user", "content": "tell me about sex"}]}


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def _server(
    upstream: FakeOpenAIServer, tmp_path: Path, redis_url: str, prefix: str, **extra: object
) -> ServerThread:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: races\npacks: [minor-safety]\n")
    path = write_server_config(
        tmp_path / "persona.yaml",
        upstream.base_url,
        store={"url": redis_url, "prefix": prefix},
        bounds={"policies": [str(policy)]},
        **extra,
    )
    return ServerThread(create_app(load_server_config(path)))


def _assert_blocked_for(server: ServerThread, upstream: FakeOpenAIServer, user: str) -> None:
    before = len(upstream.requests)
    response = httpx.post(
        server.base_url + "/v1/chat/completions",
        json={**SEXUAL, "user": user},
        headers=bearer(KEYS.app),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"
    assert len(upstream.requests) == before, "the message reached the model"


async def _storm(base_url: str, rounds: int) -> list[int]:
    """Many concurrent profile deletes, erasures and updates by the user's own key."""
    headers = bearer(KEYS.ada)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        calls = []
        for i in range(rounds):
            calls += [
                client.delete("/v1/users/ada/profile"),
                client.delete("/v1/users/ada/profile"),
                client.delete("/v1/users/ada"),
                client.patch("/v1/users/ada/profile", json={"style": {"tone": "direct"}}),
            ]
            if i % 2:
                calls.append(client.delete("/v1/users/ada"))
        responses = await asyncio.gather(*calls)
    return [r.status_code for r in responses]


def test_concurrent_user_deletes_and_erasures_keep_a_minor_protected(
    upstream: FakeOpenAIServer, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """Reading the deployer fields, deleting, and writing them back in three steps let a second
    delete in between see nothing to keep and delete the restored copy: the 14-year-old's
    profile ended as ``unknown`` and sexual content reached the model."""
    with _server(upstream, tmp_path, redis_url, key_prefix) as server:
        url = server.base_url + "/v1/users/ada/profile"
        admin = bearer(KEYS.admin)
        assert httpx.put(url, json={"age_band": "13_15"}, headers=admin).status_code == 200
        _assert_blocked_for(server, upstream, "ada")
        for _ in range(8):
            statuses = asyncio.run(_storm(server.base_url, rounds=25))
            assert set(statuses) <= {200, 409}, statuses
            after = httpx.get(url, headers=admin).json()
            assert (after["age_band"], after["known_minor"]) == ("13_15", True)
        _assert_blocked_for(server, upstream, "ada")
        # an admin still deletes everything
        assert httpx.delete(url, headers=admin).json()["deleted"] is True
        assert httpx.get(url, headers=admin).json()["age_band"] == "unknown"


def test_user_first_write_starts_from_the_deployments_default_profile(
    upstream: FakeOpenAIServer, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """With ``default_profile: {age_band: under_13}`` a user's first PATCH used to store
    ``age_band: unknown`` (it started from a blank profile), and a PUT that left the field out
    did the same: the deployment's protection for every user was gone after one write."""
    with _server(
        upstream,
        tmp_path,
        redis_url,
        key_prefix,
        settings={"default_profile": {"age_band": "under_13"}},
    ) as server:
        url = server.base_url + "/v1/users/ada/profile"
        ada = bearer(KEYS.ada)
        assert httpx.get(url, headers=ada).json()["age_band"] == "under_13"
        patched = httpx.patch(url, json={"style": {"tone": "friendly"}}, headers=ada)
        assert patched.status_code == 200, patched.text
        assert (patched.json()["age_band"], patched.json()["known_minor"]) == ("under_13", True)
        _assert_blocked_for(server, upstream, "ada")
        assert httpx.delete(url, headers=ada).status_code == 200
        replaced = httpx.put(url, json={"style": {"tone": "direct"}}, headers=ada)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["age_band"] == "under_13"
        _assert_blocked_for(server, upstream, "ada")
        shed = httpx.patch(url, json={"age_band": "18_plus"}, headers=ada)
        assert shed.status_code == 403, shed.text
