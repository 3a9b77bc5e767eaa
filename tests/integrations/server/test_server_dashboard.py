"""The deployment dashboard in a real browser: the page ``persona-mw report --aggregate --html``
writes and the one a real ``persona-mw serve`` process serves to admin keys, from one Redis that
real requests (and a few weeks of recorded usage) went into.

Each page must load in headless chromium with no console error (its Content-Security-Policy
turns any attempt to load something from outside into one), every chart must have rendered
marks, and neither may carry a user id. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from browser_helpers import chromium, inspect_page, require_browser
from click.testing import CliRunner
from persona_mw_server.testing import ServerProcess
from server_helpers import KEYS, bearer, model_entry, write_config

from persona_mw.cli import cli
from persona_mw.signals import UsageEvent
from persona_mw.signals.usage_store import RedisUsageStore
from persona_mw.testing import FakeOpenAIServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHARTS = {
    "active-users",
    "messages",
    "daily-minutes",
    "session-minutes",
    "signal-levels",
    "median-minutes",
    "ladder-actions",
    "crisis-referrals",
    "disclosures",
    "bound-decisions",
}
USERS = [f"dash-user-{i}" for i in range(6)]
CRISIS_USERS = USERS[:2]


def _history(now: datetime) -> list[UsageEvent]:
    """Three weeks of sessions: user i chats on most days, (5 + 7 i) minutes, some late at
    night, with consent to analysis and a dependence cue now and then."""
    events = []
    for i, user in enumerate(USERS):
        for day in range(1, 21):
            if (day + i) % 4 == 0:
                continue
            start = (now - timedelta(days=day)).replace(hour=(1 if day % 5 == i % 5 else 18))
            for step in range(0, 5 + 7 * i, 3):
                ts = start + timedelta(minutes=step)
                cues = frozenset({"dependence"}) if (day + step) % 7 == 0 else frozenset()
                events.append(UsageEvent(user, ts, "user", cues=cues, analysed=True))
                events.append(UsageEvent(user, ts + timedelta(seconds=20), "assistant"))
    return events


@pytest.fixture(scope="module")
def deployment(
    redis_url: str, module_key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    prefix = module_key_prefix
    folder = tmp_path_factory.mktemp("dashboard")

    async def seed() -> None:
        store = RedisUsageStore(redis_url, prefix=prefix, retention_days=60)
        await store.append(_history(datetime.now(UTC)))
        await store.aclose()

    asyncio.run(seed())
    with FakeOpenAIServer() as upstream:
        path = write_config(
            folder / "persona.yaml",
            model_list=[model_entry(upstream.base_url)],
            store={"url": redis_url, "prefix": prefix},
            settings={"hash_secret": "test-secret"},
            server={"api_keys": KEYS.config()},
            bounds={"jurisdictions": ["us-ca-sb243"]},
        )
        with ServerProcess(path, log_path=folder / "server.log") as server:
            with httpx.Client(base_url=server.base_url, headers=bearer(KEYS.app)) as client:
                for user in USERS:
                    text = "I want to end my life" if user in CRISIS_USERS else "hello there"
                    response = client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "fake",
                            "messages": [{"role": "user", "content": text}],
                            "user": user,
                        },
                        timeout=30,
                    )
                    assert response.status_code == 200, response.text
            yield server, path


@pytest.mark.parametrize(
    ("key", "status", "says"),
    [
        (None, 401, "missing API key"),
        (KEYS.app, 403, "needs a key with role 'admin'"),
        (KEYS.ada, 403, "needs a key with role 'admin'"),
    ],
)
def test_the_dashboard_is_for_admin_keys_only(
    deployment: tuple[ServerProcess, Path], key: str | None, status: int, says: str
) -> None:
    server, _ = deployment
    response = httpx.get(
        server.base_url + "/v1/admin/dashboard", headers=bearer(key) if key else {}, timeout=30
    )
    assert response.status_code == status
    assert says in response.json()["error"]["message"]


def test_the_file_and_the_served_page_render_every_chart_in_a_real_browser(
    deployment: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    require_browser()
    server, config = deployment
    page = tmp_path / "dashboard.html"
    result = CliRunner().invoke(
        cli, ["report", "--aggregate", "--html", str(page), "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert '"crisis_referrals": 2' in result.output

    served = httpx.get(
        server.base_url + "/v1/admin/dashboard", headers=bearer(KEYS.admin), timeout=30
    )
    assert served.status_code == 200, served.text
    assert served.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in served.headers["content-security-policy"]

    with chromium(headers=bearer(KEYS.admin)) as browser:
        from_file = inspect_page(browser, page.as_uri(), "dashboard-file")
        from_server = inspect_page(browser, server.base_url + "/v1/admin/dashboard", "dashboard")

    for shown in (from_file, from_server):
        assert shown.title == "persona_mw: deployment dashboard"
        assert shown.console_errors == []
        assert set(shown.charts) == CHARTS
        empty = [chart for chart, marks in shown.charts.items() if marks == 0]
        assert empty == [], f"charts without rendered marks: {empty}"
        assert shown.screenshot.stat().st_size > 20_000
        assert not any(user in shown.text for user in USERS)
        assert "tier 1 (law) · crisis.ideation · " in shown.text
    # the same figures either way: per-day charts have the same marks
    assert from_file.charts == from_server.charts
    for text in (page.read_text(), served.text):
        assert not any(user in text for user in USERS)
