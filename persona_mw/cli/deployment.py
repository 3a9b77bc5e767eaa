"""One configuration for every command: ``--config FILE`` (or ``$PERSONA_MW_CONFIG``), the same
YAML file the server and the LiteLLM plugin read. Its ``store`` (url, prefix), ``bounds``
(policies) and ``signals`` sections are what the commands use; explicit options
(``--redis-url``, ``--prefix``, ``--policy``) override it.

The older environment variables keep working with a deprecation warning on stderr:
``PERSONA_MW_REDIS_URL`` (the store URL) and ``PERSONA_MW_SERVER_CONFIG`` (the server's config).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "CONFIG_ENV",
    "DEPRECATED_ENV",
    "config_option",
    "deprecated_env",
    "load_deployment",
    "policy_paths",
    "store_location",
]

#: The one variable that names the deployment's config file, for every entry point.
CONFIG_ENV = "PERSONA_MW_CONFIG"

#: Older variables, still read (with a warning on stderr), and what replaces each.
DEPRECATED_ENV = {
    "PERSONA_MW_SERVER_CONFIG": f"{CONFIG_ENV} (the same file, for every entry point)",
    "PERSONA_MW_REDIS_URL": f"store.url in the config file (--config / {CONFIG_ENV}), "
    "or --redis-url",
}

F = TypeVar("F", bound=Callable[..., Any])


def config_option(function: F) -> F:
    """``--config FILE``, defaulting to ``$PERSONA_MW_CONFIG``."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        envvar=CONFIG_ENV,
        help=f"the deployment's YAML config (the server's file; default: ${CONFIG_ENV}): "
        "store, policies and signals come from it",
    )(function)


def deprecated_env(name: str) -> str | None:
    """An older variable's value, with a warning naming what replaces it."""
    value = os.environ.get(name) or None
    if value is not None:
        click.echo(f"warning: {name} is deprecated; use {DEPRECATED_ENV[name]}", err=True)
    return value


def load_deployment(config_path: str | None) -> Config:
    """The config file (the embedded defaults when none), or a usage error naming the file
    and the field."""
    from ..config import load_config
    from ..errors import ConfigError

    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def store_location(config: Config, redis_url: str | None, prefix: str | None) -> tuple[str, str]:
    """The store URL and key prefix: an option wins, then the config file, then (deprecated)
    ``$PERSONA_MW_REDIS_URL``."""
    url = redis_url or config.store.url or deprecated_env("PERSONA_MW_REDIS_URL") or ""
    return url, prefix if prefix is not None else config.store.prefix


def policy_paths(config: Config, given: tuple[str, ...]) -> tuple[str, ...]:
    """``--policy`` files when given, else the config's ``bounds.policies`` (relative to the
    config file, as the server reads them)."""
    if given:
        return given
    policies = config.bounds.policies
    if not policies:
        raise click.UsageError(
            "no policy: pass --policy FILE, or --config FILE whose bounds.policies lists some"
        )
    base = Path(config.source).parent if config.source else Path.cwd()
    return tuple(str(base / p) for p in policies)
