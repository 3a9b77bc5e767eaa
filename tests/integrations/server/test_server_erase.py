"""Erasure through the server on a Redis store: the receipt says what was really deleted."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import model_entry, write_config

from persona_mw.testing import FakeOpenAIServer


def test_erase_receipt_counts_the_usage_really_deleted_from_redis(
    upstream: FakeOpenAIServer, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    """On a Redis store the profile, the usage and the due-state share one key index: the
    receipt must count the events the erasure removed, not report 0 because the profile's
    delete already took them (it used to say ``usage: 0`` after deleting every event)."""
    path = write_config(
        tmp_path / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        store={"url": redis_url, "prefix": key_prefix},
    )
    with ServerThread(create_app(load_server_config(path))) as server:
        url = server.base_url
        httpx.patch(url + "/v1/users/rex/profile", json={"timezone": "UTC"}).raise_for_status()
        for text in ("one", "two", "three"):
            message = {
                "model": "fake",
                "user": "rex",
                "messages": [{"role": "user", "content": text}],
            }
            httpx.post(url + "/v1/chat/completions", json=message).raise_for_status()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the recorder writes in the background
            usage = httpx.get(url + "/v1/users/rex/usage").json()["usage"]["dependence"]
            if usage["events"] == 6:
                break
            time.sleep(0.05)
        assert usage["events"] == 6
        erased = httpx.delete(url + "/v1/users/rex").json()["erased"]
        assert erased["profile"] is True
        assert erased["usage"] == {"events": 6, "rollup_days": 0}  # what was really deleted
        after = httpx.get(url + "/v1/users/rex/usage").json()["usage"]["dependence"]
        assert after["events"] == 0
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{key_prefix}*")) == []  # nothing of rex is left
    finally:
        client.close()
