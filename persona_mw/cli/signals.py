"""``persona-mw signals`` (offline analysis of an events file) and ``persona-mw report``.

Both use the live code path (:mod:`persona_mw.signals.offline` → compute → ladder). Neither
imports litellm: the offline cue detectors are plain patterns.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

__all__ = ["report", "signals"]


class IsoTime(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """An ISO-8601 instant with a UTC offset (``2025-03-09T12:00:00-05:00`` or ``...Z``)."""

    name = "ISO-8601"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not ISO-8601, e.g. 2025-03-09T12:00:00+00:00", param, ctx)
        if parsed.tzinfo is None:
            self.fail(f"{value!r} has no UTC offset; add one, e.g. +00:00 or Z", param, ctx)
        return parsed


def _config(path: str | None) -> Any:
    from persona_mw.config import load_config
    from persona_mw.errors import ConfigError
    from persona_mw.signals.config import SignalsConfig, load_signals_config

    if path is None:
        return SignalsConfig()
    try:
        return load_signals_config(load_config(path).signals, source=path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _read_events(stream: IO[str]) -> list[Any]:
    from persona_mw.signals.offline import EventLineError, parse_event_lines

    try:
        return parse_event_lines(stream)
    except EventLineError as exc:
        raise click.ClickException(f"{getattr(stream, 'name', 'events')}: {exc}") from None


_NOW_HELP = "the instant to compute at (ISO-8601 with offset); default: the current time"


@click.command()
@click.option(
    "--events",
    "events_file",
    type=click.File("r"),
    required=True,
    help="JSON lines: {user, ts, role, text?, tz?, minor?}; '-' for stdin",
)
@click.option("--now", type=IsoTime(), default=None, help=_NOW_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="a deployment YAML; its signals: section sets the thresholds",
)
@click.option("--history", is_flag=True, help="also print each user's daily history")
def signals(
    events_file: IO[str], now: datetime | None, config_path: str | None, history: bool
) -> None:
    """Compute dependence signals and due actions per user from a file of messages.

    Prints one JSON object keyed by user; see docs/signals.md for every field.
    """
    from persona_mw.signals.offline import analyse_events

    cfg = _config(config_path)
    events = _read_events(events_file)
    results = analyse_events(events, now or datetime.now(UTC), cfg)
    out = {
        user: {**s.to_dict(history=history), "actions": actions}
        for user, (s, actions) in results.items()
    }
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@click.command()
@click.option("--user", "user_id", help="report on this user")
@click.option("--aggregate", is_flag=True, help="non-identifying counts across all users")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    help="with --user: also write a self-contained HTML page with charts",
)
@click.option(
    "--events",
    "events_file",
    type=click.File("r"),
    help="read usage from a JSON-lines file instead of Redis",
)
@click.option(
    "--redis-url",
    envvar="PERSONA_MW_REDIS_URL",
    help="the usage store (default: $PERSONA_MW_REDIS_URL)",
)
@click.option("--prefix", default="pmw:", show_default=True, help="Redis key prefix")
@click.option("--now", type=IsoTime(), default=None, help=_NOW_HELP)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="a deployment YAML; its signals: section sets the thresholds",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a text table")
def report(
    user_id: str | None,
    aggregate: bool,
    html_file: str | None,
    events_file: IO[str] | None,
    redis_url: str | None,
    prefix: str,
    now: datetime | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """A user's current signals and daily history, or aggregate counts for an annual report."""
    if bool(user_id) == aggregate:
        raise click.UsageError("give exactly one of --user ID or --aggregate")
    if html_file and not user_id:
        raise click.UsageError("--html goes with --user")
    if events_file is None and not redis_url:
        raise click.UsageError(
            "no usage source: pass --events FILE, or --redis-url URL (or set PERSONA_MW_REDIS_URL)"
        )
    cfg = _config(config_path)
    at = now or datetime.now(UTC)
    if events_file is not None:
        from persona_mw.signals.action_state import MemoryActionStateStore

        data = _Loaded(_read_events(events_file), MemoryActionStateStore())
    else:
        data = asyncio.run(_load_redis(str(redis_url), prefix, user_id, at, cfg.history_days))
    if user_id:
        _user_report(data, user_id, at, cfg, html_file, as_json)
    else:
        _aggregate_report(data, at, cfg, as_json)


class _Loaded:
    def __init__(
        self,
        events: list[Any],
        state: Any,
        last_fired: dict[str, Any] | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.events = events
        self.state = state
        self.last_fired = last_fired or {}
        self.counters = counters or {}


async def _load_redis(
    url: str, prefix: str, user_id: str | None, now: datetime, history_days: int
) -> _Loaded:
    from datetime import timedelta

    from persona_mw.errors import StoreError
    from persona_mw.signals.action_state import RedisActionStateStore

    try:
        from persona_mw.signals.usage_store import RedisUsageStore
    except ImportError as exc:  # the recorder's module
        raise click.ClickException(f"the Redis usage store is not available ({exc})") from None
    store = RedisUsageStore(url, prefix=prefix)
    state = RedisActionStateStore(url, prefix=prefix)
    since = now - timedelta(days=history_days)
    try:
        if user_id:
            events = list(await store.events(user_id, since=since))
            last_fired = await state.get(user_id)
            counters: dict[str, int] = {}
        else:
            events = []
            users = store.users()
            ids = [u async for u in users] if hasattr(users, "__aiter__") else list(await users)
            for uid in ids:
                events.extend(await store.events(uid, since=since))
            last_fired = {}
            counters = await state.counters(str(now.year))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await store.aclose()
        await state.aclose()
    return _Loaded(events, state, last_fired, counters)


def _user_report(
    data: _Loaded, user_id: str, now: datetime, cfg: Any, html_file: str | None, as_json: bool
) -> None:
    from persona_mw.signals.compute import compute_signals
    from persona_mw.signals.ladder import run_ladder
    from persona_mw.signals.report import user_report_html, user_report_text

    mine = [e for e in data.events if e.user_id == user_id]
    if not mine:
        raise click.ClickException(
            f"no usage recorded for user {user_id!r} in the last {cfg.history_days} days"
        )
    s = compute_signals(mine, now, cfg, user_id=user_id, minor=any(e.minor for e in mine))
    result = run_ladder(s, config=cfg)
    if html_file:
        Path(html_file).write_text(user_report_html(s, result), encoding="utf-8")
    if as_json:
        click.echo(
            json.dumps(
                {
                    **s.to_dict(history=True),
                    "actions": result.kinds,
                    "last_fired": {k: v.isoformat() for k, v in data.last_fired.items()},
                },
                indent=2,
            )
        )
    else:
        click.echo(user_report_text(s, result, last_fired=data.last_fired), nl=False)


def _aggregate_report(data: _Loaded, now: datetime, cfg: Any, as_json: bool) -> None:
    from persona_mw.signals.offline import analyse_events
    from persona_mw.signals.report import aggregate_report, aggregate_text

    computed = [s for s, _ in analyse_events(data.events, now, cfg).values()]
    out = aggregate_report(computed, config=cfg, counters=data.counters, period=str(now.year))
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(aggregate_text(out), nl=False)
