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
    from persona_mw.signals.config import SignalsConfig

    if path is None:
        return SignalsConfig()
    try:
        return load_config(path).signals
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _read_events(stream: IO[str]) -> tuple[list[Any], dict[str, tuple[str, ...]]]:
    from persona_mw.signals.offline import EventLineError, parse_event_file

    try:
        return parse_event_file(stream)
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
@click.option(
    "--jurisdiction",
    "jurisdictions",
    multiple=True,
    help="a law that applies to every user (events may add theirs); repeatable",
)
@click.option(
    "--replay",
    is_flag=True,
    help="run each user's messages through the live ladder one by one and add actions_log",
)
def signals(
    events_file: IO[str],
    now: datetime | None,
    config_path: str | None,
    history: bool,
    jurisdictions: tuple[str, ...],
    replay: bool,
) -> None:
    """Compute dependence signals and due actions per user from a file of messages.

    Prints one JSON object keyed by user; see docs/signals.md for every field. With
    ``--replay``, each user also gets ``actions_log``: every action the ladder took at each of
    their messages (its due-state carried along, as live) and the laws that required it.
    """
    from persona_mw.compliance import known_codes
    from persona_mw.signals.offline import analyse_events, replay_events

    unknown = [code for code in jurisdictions if code not in known_codes()]
    if unknown:
        raise click.BadParameter(
            f"unknown jurisdiction(s) {unknown}; use codes from {list(known_codes())}",
            param_hint="--jurisdiction",
        )
    cfg = _config(config_path)
    events, laws = _read_events(events_file)
    at = now or datetime.now(UTC)
    results = analyse_events(events, at, cfg)
    out: dict[str, dict[str, Any]] = {
        user: {**s.to_dict(history=history), "actions": actions}
        for user, (s, actions) in results.items()
    }
    if replay:
        logs = replay_events(events, at, cfg, laws=laws, default_laws=jurisdictions)
        for user, log in logs.items():
            out[user]["actions_log"] = [entry.to_json() for entry in log]
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@click.command()
@click.option("--user", "user_id", help="report on this user")
@click.option("--aggregate", is_flag=True, help="non-identifying counts across all users")
@click.option(
    "--statutory",
    "statutory_law",
    metavar="LAW",
    help="the figures law LAW asks for (a jurisdiction code), per month, from the shared store",
)
@click.option(
    "--from", "date_from", type=click.DateTime(["%Y-%m-%d"]), help="with --statutory: first day"
)
@click.option(
    "--to", "date_to", type=click.DateTime(["%Y-%m-%d"]), help="with --statutory: last day"
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    help="with --user, --aggregate (the dashboard) or --statutory: also write a self-contained "
    "HTML page",
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
    statutory_law: str | None,
    date_from: datetime | None,
    date_to: datetime | None,
    html_file: str | None,
    events_file: IO[str] | None,
    redis_url: str | None,
    prefix: str | None,
    now: datetime | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """A user's current signals and daily history, aggregate counts for an annual report, or a
    law's statutory figures (``--statutory LAW --from DATE --to DATE``; JSON, and --html)."""
    if sum((bool(user_id), aggregate, bool(statutory_law))) != 1:
        raise click.UsageError("give exactly one of --user ID or --aggregate (or --statutory LAW)")
    if statutory_law:
        if date_from is None or date_to is None:
            raise click.UsageError("--statutory needs --from DATE and --to DATE (YYYY-MM-DD)")
        url, key_prefix = store_location(load_deployment(config_path), redis_url, prefix)
        if not url:
            raise click.UsageError(
                "--statutory reads the deployment's shared counters: pass --config FILE (its "
                "store.url) or --redis-url URL"
            )
        _statutory_report(
            url, key_prefix, statutory_law, date_from.date(), date_to.date(), html_file
        )
        return
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
    if aggregate:
        events = None if events_file is None else _read_events(events_file)[0]
        _aggregate_report(events, str(redis_url), prefix, at, cfg, html_file, as_json)
        return
    if events_file is not None:
        data = _from_events(_read_events(events_file)[0], user_id, at, cfg)
    else:
        data = asyncio.run(_from_redis(str(redis_url), prefix, str(user_id), at, cfg))
    _user_report(data, str(user_id), cfg, html_file, as_json)


def _statutory_report(
    url: str, prefix: str, law: str, start: Any, end: Any, html_file: str | None
) -> None:
    from persona_mw.compliance.reports import report_html, statutory_report
    from persona_mw.errors import PersonaError
    from persona_mw.signals.action_state import RedisActionStateStore

    async def run() -> dict[str, Any]:
        store = RedisActionStateStore(url, prefix=prefix)
        try:
            return await statutory_report(store.counters, law, start, end)
        finally:
            await store.aclose()

    try:
        out = asyncio.run(run())
    except (PersonaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if html_file:
        Path(html_file).write_text(report_html(out), encoding="utf-8")
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


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


async def _from_redis(url: str, prefix: str, user_id: str, now: datetime, cfg: Any) -> _Loaded:
    """One user's signals from the usage store's rollup: O(days), whatever their history."""
    from persona_mw.errors import StoreError
    from persona_mw.signals.action_state import RedisActionStateStore
    from persona_mw.signals.usage_store import RedisUsageStore

    store = RedisUsageStore(url, prefix=prefix, retention_days=cfg.history_days, signals=cfg)
    state = RedisActionStateStore(url, prefix=prefix)
    try:
        rollup = await store.rollup(user_id)
        computed = [rollup.signals(now, cfg, user_id=user_id)] if rollup.events else []
        last_fired = await state.get(user_id)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await store.aclose()
        await state.aclose()
    return _Loaded({s.user_id: s for s in computed}, last_fired)


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


def _aggregate_report(
    events: list[Any] | None,
    url: str,
    prefix: str,
    now: datetime,
    cfg: Any,
    html_file: str | None,
    as_json: bool,
) -> None:
    """The counts across users (the dashboard's summary) and, with ``html_file``, the
    dashboard page. From an events file there are no deployment counters (actions fired, bound
    decisions, statutory figures): those charts stay empty."""
    from persona_mw.signals.dashboard import dashboard_report
    from persona_mw.signals.offline import analyse_events
    from persona_mw.signals.report import aggregate_text

    if events is not None:
        computed = [s for _, (s, _) in sorted(analyse_events(events, now, cfg).items())]
        out = dashboard_report(computed, now=now, config=cfg)
    else:
        out = asyncio.run(_dashboard_from_redis(url, prefix, now, cfg))
    if html_file:
        from persona_mw.signals.dashboard import dashboard_html

        Path(html_file).write_text(dashboard_html(out), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(out["summary"], indent=2))
    else:
        click.echo(aggregate_text(out["summary"]), nl=False)


async def _dashboard_from_redis(url: str, prefix: str, now: datetime, cfg: Any) -> dict[str, Any]:
    """Every user's signals from the rollups (O(days) per user) and the deployment counters."""
    from persona_mw.errors import StoreError
    from persona_mw.signals.action_state import RedisActionStateStore
    from persona_mw.signals.dashboard import load_dashboard
    from persona_mw.signals.usage_store import RedisUsageStore

    store = RedisUsageStore(url, prefix=prefix, retention_days=cfg.history_days, signals=cfg)
    state = RedisActionStateStore(url, prefix=prefix)
    try:
        return await load_dashboard(store, state, now=now, config=cfg)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await store.aclose()
        await state.aclose()
