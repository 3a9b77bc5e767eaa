"""``persona-mw profile get|set|delete``: a user's profile in the configured store."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from ..errors import PersonaError
from ..profile import parse_profile
from ..stores import open_store
from ..types import ProfileStore
from .deployment import config_option, load_deployment, store_location

__all__ = ["profile"]

T = TypeVar("T")

_redis_option = click.option(
    "--redis-url",
    default=None,
    help="Profile store URL (default: store.url of --config; without either the embedded "
    "store, which lasts only as long as the command).",
)
_prefix_option = click.option(
    "--prefix", default=None, help="Redis key prefix (default: store.prefix of --config, pmw:)."
)


def _options(function: Callable[..., Any]) -> Callable[..., Any]:
    return config_option(_redis_option(_prefix_option(function)))


def _store(config_path: str | None, redis_url: str | None, prefix: str | None) -> tuple[str, str]:
    return store_location(load_deployment(config_path), redis_url, prefix)


def _run(url: str, prefix: str, action: Callable[[ProfileStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = open_store(url, prefix=prefix)
        try:
            return await action(store)
        finally:
            await store.aclose()

    if not url:
        click.echo(
            "note: embedded in-memory store; nothing persists after this command "
            "(pass --config FILE with store.url, or --redis-url)",
            err=True,
        )
    try:
        return asyncio.run(go())
    except PersonaError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def profile() -> None:
    """See, change or erase a user's profile (tier 3)."""


@profile.command("get")
@click.argument("user")
@_options
def get(user: str, config_path: str | None, redis_url: str | None, prefix: str | None) -> None:
    """Print USER's profile as JSON (the default profile when there is none)."""

    async def action(store: ProfileStore) -> Any:
        from ..profile import Profile

        found = await store.get(user)
        return (found or Profile.default(user)).model_dump(mode="json"), found is not None

    data, exists = _run(*_store(config_path, redis_url, prefix), action)
    if not exists:
        click.echo(f"note: no stored profile for {user!r}; showing the default", err=True)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@profile.command("set")
@click.argument("user")
@click.option(
    "--file",
    "-f",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="JSON profile (or with --patch, a JSON merge patch); - is stdin.",
)
@click.option(
    "--patch",
    is_flag=True,
    help="Merge into the stored profile (RFC 7396) instead of replacing it.",
)
@_options
def set_(
    user: str,
    path: str,
    patch: bool,
    config_path: str | None,
    redis_url: str | None,
    prefix: str | None,
) -> None:
    """Validate and store USER's profile; print it with its new version."""
    if path == "-":
        raw = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as handle:
            raw = handle.read()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.ClickException(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None

    async def action(store: ProfileStore) -> Any:
        from ..stores import update_profile

        if patch:
            stored = await update_profile(store, user, body)
        else:
            new = parse_profile(body, user_id=user)
            current = await store.get(user)
            stored = await store.put(new, expected_version=current.version if current else 0)
        return stored.model_dump(mode="json")

    click.echo(
        json.dumps(
            _run(*_store(config_path, redis_url, prefix), action), indent=2, ensure_ascii=False
        )
    )


@profile.command("delete")
@click.argument("user")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_options
def delete(
    user: str, yes: bool, config_path: str | None, redis_url: str | None, prefix: str | None
) -> None:
    """Erase everything stored for USER (profile, usage, state)."""
    if not yes:
        click.confirm(f"Erase all data of {user!r}?", abort=True)

    async def action(store: ProfileStore) -> bool:
        return await store.delete(user)

    removed = _run(*_store(config_path, redis_url, prefix), action)
    click.echo(f"erased {user!r}" if removed else f"nothing stored for {user!r}")
