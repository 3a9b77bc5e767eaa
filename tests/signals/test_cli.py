"""The offline CLI contract: ``persona-mw signals --events FILE --now ISO`` and ``report``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_mw.cli import cli

from .timelines import session

#: The keys issue 5 names, each with the type it must have.
CONTRACT = {
    "current_session_minutes": float,
    "daily_active_minutes": float,
    "messages_today": int,
    "sessions_today": int,
    "active_day_streak": int,
    "days_active_28": int,
    "late_night_share": float,
    "usage_trend": float,
    "cue_rates": dict,
    "fear_of_addiction": bool,
    "actions": list,
}
NOW = datetime(2025, 3, 9, 13, 6, tzinfo=UTC)


def lines(*rows: dict[str, object]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def timeline_file(tmp_path: Path) -> Path:
    rows: list[dict[str, object]] = []
    for ev in session("kid", NOW - timedelta(minutes=185), 184, every=5):
        rows.append({"user": "kid", "ts": ev.ts.isoformat(), "role": ev.role, "minor": True})
    for ev in session("light", NOW - timedelta(days=1), 6):
        rows.append(
            {"user": "light", "ts": ev.ts.isoformat(), "role": ev.role, "tz": "Europe/Paris"}
        )
    rows += [
        {
            "user": "ada",
            "ts": "2025-03-09T01:10:00-05:00",
            "role": "user",
            "text": "I can't live without you",
            "tz": "America/New_York",
        },
        {
            "user": "ada",
            "ts": "2025-03-09T01:10:30-05:00",
            "role": "assistant",
            "text": "Of course.",
        },
        {
            "user": "ada",
            "ts": "2025-03-09T03:20:00-04:00",
            "role": "user",
            "text": "I think I'm addicted.",
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text(lines(*rows))
    return path


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.output


def test_signals_output_contract(tmp_path: Path) -> None:
    code, out = run("signals", "--events", str(timeline_file(tmp_path)), "--now", NOW.isoformat())
    assert code == 0, out
    data = json.loads(out)
    assert sorted(data) == ["ada", "kid", "light"]
    for user, fields in data.items():
        for key, kind in CONTRACT.items():
            assert isinstance(fields[key], kind), (user, key)
        assert set(fields["cue_rates"]) == {
            "dependence",
            "anthropomorphism",
            "support_seeking",
            "fear_of_addiction",
        }
    kid, light, ada = data["kid"], data["light"], data["ada"]
    assert kid["minor"] is True and kid["current_session_minutes"] == pytest.approx(
        180 + 1 / 3, abs=0.01
    )
    assert set(kid["actions"]) == {"log", "break_reminder", "statutory_reminder", "ai_disclosure"}
    assert light["actions"] == [] and light["tz"] == "Europe/Paris"
    assert light["messages_today"] == 0 and light["active_day_streak"] == 1
    assert ada["fear_of_addiction"] is True
    assert ada["cue_rates"]["dependence"] == 0.5
    assert ada["late_night_share"] == 1.0 and ada["sessions_today"] == 2
    assert ada["tz"] == "America/New_York"
    assert set(ada["actions"]) >= {"reduced_personalisation", "suggest_limits"}
    assert sum(1 for u in data.values() if u["percentile"] is not None) == 3


def test_signals_reads_stdin_and_history(tmp_path: Path) -> None:
    code, out = run(
        "signals",
        "--events",
        "-",
        "--now",
        "2025-01-02T00:00:00Z",
        "--history",
        input=lines({"user": "u", "ts": "2025-01-01T12:00:00Z", "role": "user"}),
    )
    assert code == 0, out
    history = json.loads(out)["u"]["history"]
    assert len(history) == 28 and history[-2]["messages"] == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: not valid JSON"),
        ('{"user": "u", "ts": "2025-01-01T12:00:00", "role": "user"}', "has no UTC offset"),
        ('{"user": "u", "ts": "yesterday", "role": "user"}', "is not ISO-8601"),
        ('{"user": "u", "ts": "2025-01-01T12:00:00Z", "role": "system"}', '"role" must be'),
        (
            '{"user": "u", "ts": "2025-01-01T12:00:00Z", "role": "user", "tz": "Mars/Base"}',
            'unknown "tz"',
        ),
        ('{"ts": "2025-01-01T12:00:00Z", "role": "user"}', '"user" must be'),
    ],
)
def test_signals_names_the_bad_line(line: str, message: str) -> None:
    code, out = run("signals", "--events", "-", input=line + "\n")
    assert code == 1
    assert message in out


def test_signals_refuses_a_naive_now(tmp_path: Path) -> None:
    code, out = run(
        "signals", "--events", str(timeline_file(tmp_path)), "--now", "2025-03-09T13:00"
    )
    assert code == 2 and "no UTC offset" in out


def test_signals_thresholds_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "persona.yaml"
    config.write_text("signals:\n  break_after_minutes: 500\n  break_interval_minutes: 500\n")
    code, out = run(
        "signals",
        "--events",
        str(timeline_file(tmp_path)),
        "--now",
        NOW.isoformat(),
        "--config",
        str(config),
    )
    assert code == 0, out
    assert "break_reminder" not in json.loads(out)["kid"]["actions"]
    config.write_text("signals:\n  minor_reminder_interval_minutes: 240\n")
    code, out = run("signals", "--events", str(timeline_file(tmp_path)), "--config", str(config))
    assert code == 1 and "signals.minor_reminder_interval_minutes" in out


def test_report_user_text_and_html(tmp_path: Path) -> None:
    page = tmp_path / "ada.html"
    code, out = run(
        "report",
        "--user",
        "ada",
        "--events",
        str(timeline_file(tmp_path)),
        "--now",
        NOW.isoformat(),
        "--html",
        str(page),
    )
    assert code == 0, out
    assert "fear_of_addiction           yes         WATCH" in out
    assert "2025-03-09  2.5" in out  # today's row of the history
    html = page.read_text()
    assert html.count("<svg") == 3
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    for title in ("Daily active minutes", "Late-night share", "Cue rates"):
        assert title in html


def test_report_aggregate_is_non_identifying(tmp_path: Path) -> None:
    code, out = run(
        "report",
        "--aggregate",
        "--json",
        "--events",
        str(timeline_file(tmp_path)),
        "--now",
        NOW.isoformat(),
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["users"] == 3 and data["active_users_28d"] == 3
    assert data["known_minors_active_28d"] == 1
    assert data["users_with_action_due"]["statutory_reminder"] == 1
    assert data["crisis_referrals"] == 0
    for name in ("ada", "kid", "light"):
        assert name not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report"], "exactly one of --user ID or --aggregate"),
        (["report", "--user", "a", "--aggregate"], "exactly one of"),
        (["report", "--aggregate", "--html", "x.html"], "no usage source"),
        (["report", "--user", "a"], "no usage source"),
    ],
)
def test_report_usage_errors(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSONA_MW_REDIS_URL", raising=False)
    code, out = run(*args, input="")
    assert code == 2 and message in out


def test_report_unknown_user(tmp_path: Path) -> None:
    code, out = run("report", "--user", "nobody", "--events", str(timeline_file(tmp_path)))
    assert code == 1 and "no usage recorded for user 'nobody'" in out


def _recent_copy(tmp_path: Path) -> tuple[Path, datetime]:
    """The timeline moved forward by whole weeks to lie within the store's retention."""
    weeks = timedelta(weeks=(datetime.now(UTC) - NOW) // timedelta(weeks=1) + 1)
    rows = [json.loads(line) for line in timeline_file(tmp_path).read_text().splitlines()]
    for row in rows:
        row["ts"] = (datetime.fromisoformat(str(row["ts"])) + weeks).isoformat()
    path = tmp_path / "recent.jsonl"
    path.write_text(lines(*rows))
    return path, NOW + weeks


@pytest.mark.parametrize("which", ["--user", "--aggregate"])
def test_report_from_redis_rollups_equals_the_report_from_the_events(
    tmp_path: Path, redis_url: str, key_prefix: str, which: str
) -> None:
    """The events recorded in a real Redis (rollups, some still in the reorder window) give the
    report the events file gives; the aggregate adds the stored crisis-referral count."""
    from persona_mw.signals.action_state import RedisActionStateStore
    from persona_mw.signals.offline import parse_event_lines
    from persona_mw.signals.usage_store import RedisUsageStore

    path, now = _recent_copy(tmp_path)
    with path.open() as stream:
        events = parse_event_lines(stream)

    async def record() -> None:
        store = RedisUsageStore(redis_url, prefix=key_prefix, retention_days=60)
        for start in range(0, len(events), 7):
            await store.append(events[start : start + 7])
        assert (await store.rollup("kid")).days  # most of the kid's events are folded
        await store.aclose()
        state = RedisActionStateStore(redis_url, prefix=key_prefix)
        await state.incr("crisis_referrals", str(now.year), 2)
        await state.aclose()

    asyncio.run(record())
    args = [which, "ada"] if which == "--user" else [which]
    common = ["report", *args, "--json", "--now", now.isoformat()]
    code, from_file = run(*common, "--events", str(path))
    assert code == 0, from_file
    code, from_redis = run(*common, "--redis-url", redis_url, "--prefix", key_prefix)
    assert code == 0, from_redis
    want, got = json.loads(from_file), json.loads(from_redis)
    if which == "--aggregate":
        assert (want.pop("crisis_referrals"), got.pop("crisis_referrals")) == (0, 2)
    assert got == want
