"""The ``persona-mw`` command: fast help, the offline demo, profile get/set/delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_mw.cli import cli

BIN = Path(sys.executable).parent / "persona-mw"


def test_help_is_fast_and_does_not_import_litellm() -> None:
    code = (
        "import sys; from persona_mw.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'litellm' not in sys.modules, 'litellm imported by --help'"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "profile" in result.stdout
    assert elapsed < 2.0, f"--help took {elapsed:.2f} s"


def test_demo_runs_offline_and_shows_two_different_conversations() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k != "PERSONA_MW_MODEL"
    }
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN), "demo"], capture_output=True, text=True, timeout=120, env=env
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert elapsed < 30, f"demo took {elapsed:.1f} s"
    assert "[offline demo model]" in out
    ada, sam = out.split("=== sam")
    assert "=== ada" in ada
    # the same first question gets different answers for the two profiles
    first_reply = lambda section: section.split("reply:")[1].split("operator log:")[0]  # noqa: E731
    assert first_reply(ada) != first_reply(sam)
    events = [
        json.loads(line.strip())
        for line in out.splitlines()
        if line.strip().startswith('{"request_id"')
    ]
    assert len(events) == 6 and all(e["event"] == "request.completed" for e in events)
    assert len({e["user"] for e in events}) == 2
    assert "ada" not in {e["user"] for e in events}


@pytest.mark.parametrize("args", [["nonsense"], ["profile", "get"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2


def test_profile_set_get_delete_against_redis(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["--redis-url", redis_url, "--prefix", key_prefix]
    profile = tmp_path / "ada.json"
    profile.write_text(
        json.dumps({"style": {"tone": "direct"}, "consent": {"personalisation": True}})
    )
    result = runner.invoke(cli, ["profile", "set", "ada", "-f", str(profile), *base])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["version"] == 1

    result = runner.invoke(
        cli, ["profile", "set", "ada", "--patch", *base], input='{"style": {"verbosity": "terse"}}'
    )
    assert result.exit_code == 0, result.output
    stored = json.loads(result.output)
    assert stored["style"] == {**stored["style"], "tone": "direct", "verbosity": "terse"}
    assert stored["version"] == 2

    result = runner.invoke(cli, ["profile", "get", "ada", *base])
    assert json.loads(result.output)["style"]["verbosity"] == "terse"

    result = runner.invoke(cli, ["profile", "delete", "ada", "--yes", *base])
    assert result.exit_code == 0 and "erased" in result.output
    result = runner.invoke(cli, ["profile", "get", "ada", *base])
    assert (
        json.loads(
            result.output.split("\n", 1)[1] if result.output.startswith("note") else result.output
        )["version"]
        == 0
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"style": {"verbosity": "epic"}}', "style.verbosity"),
        ("{not json", "not valid JSON"),
        ('{"colour": 1}', "colour: unknown field"),
    ],
)
def test_profile_set_rejects_bad_input_clearly(payload: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["profile", "set", "ada"], input=payload)
    assert result.exit_code == 1
    assert message in result.output
