"""One configuration for every command: ``--config FILE`` / ``$PERSONA_MW_CONFIG`` (the
server's file) gives the store, its prefix, the policies and the signals; the older variables
keep working with a deprecation warning. Against a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from persona_mw import Profile
from persona_mw.cli import cli
from persona_mw.stores import open_store

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _no_config_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where its config comes from (another test's ``serve --workers`` may have
    left ``PERSONA_MW_CONFIG`` naming a file since deleted)."""
    monkeypatch.delenv("PERSONA_MW_CONFIG", raising=False)


def deployment(tmp_path: Path, redis_url: str, prefix: str) -> Path:
    """A server-style config: store, a policy named relative to the file, server keys."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies/p.yaml").write_text(
        (ROOT / "examples/policies/customer-support.yaml").read_text()
    )
    path = tmp_path / "persona.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": {"url": redis_url, "prefix": prefix},
                "bounds": {"policies": ["policies/p.yaml"]},
                "server": {"max_body_bytes": 65536},
            }
        )
    )
    return path


async def stored(redis_url: str, prefix: str, user: str) -> Profile | None:
    store = open_store(redis_url, prefix=prefix)
    try:
        return await store.get(user)
    finally:
        await store.aclose()


@pytest.mark.parametrize("how", ["option", "env"])
def test_profile_commands_take_the_store_and_prefix_from_the_config(
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PERSONA_MW_REDIS_URL", raising=False)
    path = deployment(tmp_path, redis_url, key_prefix)
    given = ["--config", str(path)] if how == "option" else []
    if how == "env":
        monkeypatch.setenv("PERSONA_MW_CONFIG", str(path))
    runner = CliRunner()
    result = runner.invoke(
        cli, ["profile", "set", "ada", *given], input='{"style": {"tone": "direct"}}'
    )
    assert result.exit_code == 0, result.output
    profile = asyncio.run(stored(redis_url, key_prefix, "ada"))
    assert profile is not None and profile.style.tone == "direct", "written under the prefix"
    got = runner.invoke(cli, ["profile", "get", "ada", *given])
    assert got.exit_code == 0 and json.loads(got.output)["style"]["tone"] == "direct"
    assert "embedded in-memory store" not in got.output


def test_the_old_redis_variable_still_works_with_a_warning(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSONA_MW_CONFIG", raising=False)
    monkeypatch.setenv("PERSONA_MW_REDIS_URL", redis_url)
    result = CliRunner().invoke(
        cli,
        ["profile", "set", "bob", "--prefix", key_prefix],
        input='{"style": {"tone": "formal"}}',
    )
    assert result.exit_code == 0, result.output
    assert "PERSONA_MW_REDIS_URL is deprecated" in result.output
    profile = asyncio.run(stored(redis_url, key_prefix, "bob"))
    assert profile is not None and profile.style.tone == "formal"


def test_policy_commands_read_the_configs_policies(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bounds.policies`` relative to the config file, as the server reads them."""
    monkeypatch.delenv("PERSONA_MW_CONFIG", raising=False)
    path = deployment(tmp_path, redis_url, key_prefix)
    explained = CliRunner().invoke(cli, ["policy", "explain", "--config", str(path)])
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.output)["sources"] == [str(tmp_path / "policies/p.yaml")]
    checked = CliRunner().invoke(cli, ["check", "--config", str(path)], input="hello")
    assert checked.exit_code == 0, checked.output
    missing = CliRunner().invoke(cli, ["policy", "explain"])
    assert missing.exit_code == 2 and "--config FILE" in missing.output


def test_report_reads_the_usage_store_of_the_config(
    redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same report from --config as from --redis-url/--prefix by hand (a wrong prefix would
    silently report no users)."""
    from datetime import UTC, datetime

    from persona_mw.signals import UsageEvent
    from persona_mw.signals.usage_store import RedisUsageStore

    monkeypatch.delenv("PERSONA_MW_REDIS_URL", raising=False)
    now = datetime.now(UTC)

    async def record() -> None:
        store = RedisUsageStore(redis_url, prefix=key_prefix, retention_days=60)
        await store.append(
            [UsageEvent(user_id=f"u{i}", ts=now, role="user", chars=5) for i in range(3)]
        )
        await store.aclose()

    asyncio.run(record())
    path = deployment(tmp_path, redis_url, key_prefix)
    common = ["report", "--aggregate", "--json", "--now", now.isoformat()]
    by_hand = CliRunner().invoke(cli, [*common, "--redis-url", redis_url, "--prefix", key_prefix])
    from_config = CliRunner().invoke(cli, [*common, "--config", str(path)])
    assert by_hand.exit_code == 0 and from_config.exit_code == 0, from_config.output
    assert json.loads(from_config.output) == json.loads(by_hand.output)
    assert json.loads(from_config.output) != json.loads(
        CliRunner().invoke(cli, [*common, "--redis-url", redis_url, "--prefix", "other:"]).output
    )


def test_the_sample_profile_explains_the_users_choices() -> None:
    """examples/profiles/adult-writer.json with the creative-writing policy: the user's
    choices inside the deployer's ranges and their own blocked phrases show in the explanation."""
    result = CliRunner().invoke(
        cli,
        [
            "policy",
            "explain",
            "--policy",
            str(ROOT / "examples/policies/adult-creative-writing.yaml"),
            "--profile",
            str(ROOT / "examples/profiles/adult-writer.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    reasons = {r["id"]: r["reason"] for r in json.loads(result.output)["rules"]}
    assert "user chose profanity=log" in reasons["profanity"]
    assert "fiction.companion=85" in reasons["fiction.companion"]
    assert reasons["user.block-phrases"].startswith("tier 3")
