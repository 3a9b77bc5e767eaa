"""Statutory report counts across two `persona-mw serve` workers sharing Redis: every referral
made counts exactly once, and the report names no one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from persona_mw_server.testing import ServerProcess
from server_helpers import KEYS, bearer, model_entry, write_config

from persona_mw.cli.signals import report
from persona_mw.testing import FakeOpenAIServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CA = "us-ca-sb243"


@pytest.fixture(scope="module")
def workers(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    import redis

    prefix = f"pmwtest-{uuid.uuid4().hex[:8]}:"
    folder = tmp_path_factory.mktemp("statutory")
    with FakeOpenAIServer() as upstream:
        path = write_config(
            folder / "persona.yaml",
            model_list=[model_entry(upstream.base_url)],
            store={"url": redis_url, "prefix": prefix},
            settings={"hash_secret": "test-secret"},
            server={"api_keys": KEYS.config()},
            bounds={"jurisdictions": [CA]},
        )
        with ServerProcess(path, args=["--workers", "2"], log_path=folder / "server.log") as server:
            yield server, prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _ask(server: ServerProcess, user: str, text: str) -> httpx.Response:
    with httpx.Client(headers={"Connection": "close"}) as client:  # either worker may answer
        return client.post(
            server.base_url + "/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": text}], "user": user},
            headers=bearer(KEYS.app),
            timeout=30,
        )


def test_referrals_across_two_workers_count_once_in_the_statutory_report(
    workers: tuple[ServerProcess, str], redis_url: str, tmp_path: Path
) -> None:
    server, prefix = workers
    instances = set()
    referrals = 0
    for i in range(12):
        crisis = i % 3 == 0
        response = _ask(server, f"user-{i}", "I want to end my life" if crisis else "hello there")
        assert response.status_code == 200, response.text
        instances.add(response.headers["x-persona-instance"])
        referrals += crisis
        if crisis:
            assert "988" in response.json()["choices"][0]["message"]["content"]
    assert len(instances) == 2, "both workers must have served"

    today = datetime.now(UTC).date().isoformat()
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        report,
        [
            "--statutory", CA, "--from", today, "--to", today,
            "--redis-url", redis_url, "--prefix", prefix, "--html", str(page),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["totals"]["crisis_referrals"] == referrals == 4
    assert out["totals"]["calls_in_scope"] == 12
    # the baseline policy's ai-disclosure pack: each new user is told on their first message
    assert out["totals"]["disclosures_shown"] == 12
    assert "user-" not in result.output and "user-" not in page.read_text()
    assert "crisis referrals" in page.read_text()
