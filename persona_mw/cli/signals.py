"""``persona-mw signals`` (offline analysis of an events file) and ``persona-mw report``.

Both use the live code path: an events file goes through :mod:`persona_mw.signals.offline` →
compute → ladder; a report on Redis reads the usage store's rollups (the same fold, stored), so
it costs O(days) per user. Neither imports litellm: the offline cue detectors are plain patterns.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

from .deployment import config_option, load_deployment, store_location

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
@config_option
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
@click.option("--redis-url", help="the usage store (default: store.url of --config)")
@click.option("--prefix", default=None, help="Redis key prefix (default: store.prefix of --config)")
@click.option("--now", type=IsoTime(), default=None, help=_NOW_HELP)
@config_option
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a text table")
def report(
    user_id: str | None,
    aggregate: bool,
    html_file: str | None,
    events_file: IO[str] | None,
    redis_url: str | None,
    prefix: str | None,
    now: datetime | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """A user's current signals and daily history, or aggregate counts for an annual report."""
    if bool(user_id) == aggregate:
        raise click.UsageError("give exactly one of --user ID or --aggregate")
    if html_file and not user_id:
        raise click.UsageError("--html goes with --user")
    redis_url, prefix = (
        store_location(load_deployment(config_path), redis_url, prefix)
        if events_file is None
        else ("", "")
    )
    if events_file is None and not redis_url:
        raise click.UsageError(
            "no usage source: pass --config FILE (its store.url), --events FILE, or --redis-url URL"
        )
    cfg = _config(config_path)
    at = now or datetime.now(UTC)
    if events_file is not None:
        data = _from_events(_read_events(events_file), user_id, at, cfg)
    else:
        data = asyncio.run(_from_redis(str(redis_url), prefix, user_id, at, cfg))
    if user_id:
        _user_report(data, user_id, cfg, html_file, as_json)
    else:
        _aggregate_report(data, at, cfg, as_json)


class _Loaded:
    """What a report shows: signals per user (computed from events or read from rollups), when
    each action last fired, and the deployment's counters."""

    def __init__(
        self,
        signals: dict[str, Any],
        last_fired: dict[str, Any] | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.signals = signals
        self.last_fired = last_fired or {}
        self.counters = counters or {}


def _from_events(events: list[Any], user_id: str | None, now: datetime, cfg: Any) -> _Loaded:
    from persona_mw.signals.offline import analyse_events

    if user_id:
        events = [e for e in events if e.user_id == user_id]
    return _Loaded({user: s for user, (s, _) in analyse_events(events, now, cfg).items()})


async def _from_redis(
    url: str, prefix: str, user_id: str | None, now: datetime, cfg: Any
) -> _Loaded:
    """Signals from the usage store's rollups: O(days) per user, whatever their history."""
    from persona_mw.errors import StoreError
    from persona_mw.signals.action_state import RedisActionStateStore
    from persona_mw.signals.compute import with_percentiles
    from persona_mw.signals.usage_store import RedisUsageStore

    store = RedisUsageStore(url, prefix=prefix, retention_days=cfg.history_days, signals=cfg)
    state = RedisActionStateStore(url, prefix=prefix)
    try:
        ids = [user_id] if user_id else await store.users()
        computed = []
        for uid in ids:
            rollup = await store.rollup(uid)
            if rollup.events:
                computed.append(rollup.signals(now, cfg, user_id=uid))
        if user_id:
            last_fired = await state.get(user_id)
            counters: dict[str, int] = {}
        else:
            computed = with_percentiles(computed)
            last_fired = {}
            counters = await state.counters(str(now.year))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await store.aclose()
        await state.aclose()
    return _Loaded({s.user_id: s for s in computed}, last_fired, counters)


def _user_report(
    data: _Loaded, user_id: str, cfg: Any, html_file: str | None, as_json: bool
) -> None:
    from persona_mw.signals.ladder import run_ladder
    from persona_mw.signals.report import user_report_html, user_report_text

    s = data.signals.get(user_id)
    if s is None:
        raise click.ClickException(
            f"no usage recorded for user {user_id!r} in the last {cfg.history_days} days"
        )
    s = replace(s, percentile=None)  # one user is no population
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
    from persona_mw.signals.report import aggregate_report, aggregate_text

    computed = [data.signals[user] for user in sorted(data.signals)]
    out = aggregate_report(computed, config=cfg, counters=data.counters, period=str(now.year))
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(aggregate_text(out), nl=False)
