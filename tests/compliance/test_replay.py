"""The offline check: ``persona-mw signals --replay`` runs each user's timeline through the live
ladder message by message and logs every action with the laws that required it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from persona_mw.cli.signals import signals

START = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def _lines(user: str, minutes: range, **extra: object) -> list[str]:
    return [
        json.dumps(
            {
                "user": user,
                "ts": (START + timedelta(minutes=m)).isoformat(),
                "role": "user",
                **extra,
            }
        )
        for m in minutes
    ]


def _log(out: dict[str, dict[str, list[dict[str, object]]]], user: str, action: str) -> list[str]:
    return [
        str(entry["ts"])[11:16] for entry in out[user]["actions_log"] if entry["action"] == action
    ]


def test_replay_logs_each_users_statutory_schedule(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                *_lines("wa-kid", range(0, 181, 10), minor=True, jurisdiction="us-wa-hb2225"),
                *_lines("ny-adult", range(0, 361, 10), jurisdiction=["us-ny-gbl-art47"]),
                *_lines("eu-adult", range(0, 181, 10)),
            ]
        )
    )
    now = (START + timedelta(hours=8)).isoformat()
    result = CliRunner().invoke(
        signals,
        ["--events", str(events), "--now", now, "--replay", "--jurisdiction", "eu-ai-act-art50"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert _log(out, "wa-kid", "ai_disclosure") == ["12:00", "13:00", "14:00", "15:00"]
    assert _log(out, "ny-adult", "ai_disclosure") == ["12:00", "15:00", "18:00"]
    assert _log(out, "eu-adult", "ai_disclosure") == ["12:00"]
    wa = next(
        e
        for e in out["wa-kid"]["actions_log"]
        if e["ts"].startswith("2027-03-01T13:00") and e["action"] == "ai_disclosure"
    )
    assert wa == {
        "ts": "2027-03-01T13:00:00+00:00",
        "action": "ai_disclosure",
        "laws": ["us-wa-hb2225"],
    }
    ny_start = out["ny-adult"]["actions_log"][0]
    assert ny_start["laws"] == ["us-ny-gbl-art47"]  # daily beats EU's first: NY requires it
    assert "actions" in out["eu-adult"]  # the usual output is still there


def test_without_replay_the_output_is_unchanged_and_bad_codes_are_named(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(_lines("u", range(0, 30, 10))))
    plain = CliRunner().invoke(signals, ["--events", str(events), "--now", START.isoformat()])
    assert plain.exit_code == 0 and "actions_log" not in plain.output
    bad = CliRunner().invoke(
        signals, ["--events", str(events), "--jurisdiction", "us-xx", "--replay"]
    )
    assert bad.exit_code == 2 and "unknown jurisdiction" in bad.output
    events.write_text(_lines("u", range(0, 1), jurisdiction="us-zz")[0])
    bad_line = CliRunner().invoke(signals, ["--events", str(events), "--replay"])
    assert bad_line.exit_code == 1
    assert "line 1" in bad_line.output and "unknown jurisdiction" in bad_line.output
