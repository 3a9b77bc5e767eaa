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

__all__ = ["profile"]

T = TypeVar("T")

_redis_option = click.option(
    "--redis-url",
    envvar="PERSONA_MW_REDIS_URL",
    default="",
    show_default="embedded in-memory store",
    help="Profile store; without it the embedded store is used (it lasts only as long as "
    "the command).",
)
_prefix_option = click.option(
    "--prefix", default="pmw:", show_default=True, help="Redis key prefix."
)


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
            "(pass --redis-url or set PERSONA_MW_REDIS_URL)",
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
@_redis_option
@_prefix_option
def get(user: str, redis_url: str, prefix: str) -> None:
    """Print USER's profile as JSON (the default profile when there is none)."""

    async def action(store: ProfileStore) -> Any:
        from ..profile import Profile

        found = await store.get(user)
        return (found or Profile.default(user)).model_dump(mode="json"), found is not None

    data, exists = _run(redis_url, prefix, action)
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
@_redis_option
@_prefix_option
def set_(user: str, path: str, patch: bool, redis_url: str, prefix: str) -> None:
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

    click.echo(json.dumps(_run(redis_url, prefix, action), indent=2, ensure_ascii=False))


@profile.command("delete")
@click.argument("user")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_redis_option
@_prefix_option
def delete(user: str, yes: bool, redis_url: str, prefix: str) -> None:
    """Erase everything stored for USER (profile, usage, state)."""
    if not yes:
        click.confirm(f"Erase all data of {user!r}?", abort=True)

    async def action(store: ProfileStore) -> bool:
        return await store.delete(user)

    removed = _run(redis_url, prefix, action)
    click.echo(f"erased {user!r}" if removed else f"nothing stored for {user!r}")
