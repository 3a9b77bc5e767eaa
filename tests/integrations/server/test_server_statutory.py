"""Statutory report counts across two `persona-mw serve` workers sharing Redis: every referral
made counts exactly once (a crisis message replayed in later calls' history is no new one), users
in scope are people, not calls, the day's first disclosure is shown once however many of a user's
requests are in flight, and the report names no one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from persona_mw_server.testing import ServerProcess
from server_helpers import KEYS, bearer, model_entry, write_config

from persona_mw.bounds.policy import AIDisclosure
from persona_mw.cli.signals import report
from persona_mw.testing import FakeOpenAIServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

DISCLOSURE = AIDisclosure().text

CA = "us-ca-sb243"


@pytest.fixture(scope="module")
def workers(
    redis_url: str, module_key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    prefix = module_key_prefix
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


def _ask(server: ServerProcess, user: str, messages: list[dict[str, str]]) -> httpx.Response:
    with httpx.Client(headers={"Connection": "close"}) as client:  # either worker may answer
        return client.post(
            server.base_url + "/v1/chat/completions",
            json={"model": "fake", "messages": messages, "user": user},
            headers=bearer(KEYS.app),
            timeout=60,
        )


def _statutory(redis_url: str, prefix: str, page: Path) -> tuple[dict[str, Any], str]:
    today = datetime.now(UTC).date().isoformat()
    result = CliRunner().invoke(
        report,
        [
            "--statutory", CA, "--from", today, "--to", today,
            "--redis-url", redis_url, "--prefix", prefix, "--html", str(page),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output), result.output


def test_referrals_across_two_workers_count_once_in_the_statutory_report(
    workers: tuple[ServerProcess, str], redis_url: str, tmp_path: Path
) -> None:
    """Six users hold three-turn conversations, each call replaying the history so far (the
    kernel hands each call to either worker); users 0 and 3 are in crisis on their first turn,
    user 4 on their last. Referrals made: three, one per crisis turn."""
    server, prefix = workers
    instances = set()
    referrals = calls = 0
    for i in range(6):
        history: list[dict[str, str]] = []
        turns = ["hello there", "how are you?", "tell me more"]
        if i in (0, 3):
            turns[0] = "I want to end my life"
        if i == 4:
            turns[2] = "I want to end my life"
        for turn, text in enumerate(turns):
            history.append({"role": "user", "content": text})
            response = _ask(server, f"user-{i}", history)
            assert response.status_code == 200, response.text
            instances.add(response.headers["x-persona-instance"])
            calls += 1
            content = response.json()["choices"][0]["message"]["content"]
            crisis = "end my life" in text
            referrals += crisis
            # the resources are on the crisis turn only (CA refers; it does not interrupt)
            assert ("988" in content) == crisis, (i, turn, content)
            history.append({"role": "assistant", "content": content})
    users = 6
    # The kernel hands each new connection to either worker, not in turn: under load one
    # worker took forty in a row. Until both have served, more users say hello (and count).
    while len(instances) < 2 and users < 200:
        response = _ask(server, f"user-{users}", [{"role": "user", "content": "hello"}])
        assert response.status_code == 200, response.text
        instances.add(response.headers["x-persona-instance"])
        users += 1
        calls += 1
    assert len(instances) == 2, "both workers must have served"

    page = tmp_path / "report.html"
    out, output = _statutory(redis_url, prefix, page)
    assert out["totals"]["crisis_referrals"] == referrals == 3
    assert out["totals"]["calls_in_scope"] == calls
    assert out["totals"]["users_in_scope"] == users
    # the baseline policy's ai-disclosure pack: each new user is told on their first message
    assert out["totals"]["disclosures_shown"] == users
    assert "user-" not in output and "user-" not in page.read_text()
    assert "crisis referrals" in page.read_text()


def test_a_burst_of_one_users_requests_over_two_workers_is_told_once(
    workers: tuple[ServerProcess, str], redis_url: str, tmp_path: Path
) -> None:
    """Twenty requests of a new user in flight at once, spread over both workers: exactly one
    reply carries the day's first-interaction disclosure, and the report counts one. (The kernel
    may hand a whole burst to one worker: then another new user bursts, until one burst was
    spread; every burst must have told its user once.)"""
    server, prefix = workers
    before, _ = _statutory(redis_url, prefix, tmp_path / "before.html")
    bursts = 0
    spread = False
    while not spread and bursts < 10:
        user = f"burst-{uuid.uuid4().hex[:6]}"
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(
                pool.map(
                    lambda i, u=user: _ask(server, u, [{"role": "user", "content": f"msg {i}"}]),
                    range(20),
                )
            )
        bursts += 1
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        spread = len({r.headers["x-persona-instance"] for r in responses}) == 2
        told = [r for r in responses if DISCLOSURE in r.json()["choices"][0]["message"]["content"]]
        assert len(told) == 1, (bursts, spread, len(told))
    assert spread, "no burst of twenty reached both workers"
    after, _ = _statutory(redis_url, prefix, tmp_path / "after.html")
    shown = after["totals"]["disclosures_shown"] - before["totals"]["disclosures_shown"]
    assert shown == bursts
    assert after["totals"]["users_in_scope"] == before["totals"]["users_in_scope"] + bursts
    assert after["totals"]["calls_in_scope"] == before["totals"]["calls_in_scope"] + 20 * bursts
