"""``persona-mw serve``: run the proxy with uvicorn (registered through the
``persona_mw.commands`` entry point, so the core CLI never imports this module).

For scripts: pick a free port, start ``persona-mw serve --port P [--config FILE]``, poll
``GET /readyz`` until it answers 200, then send traffic; stop it with SIGTERM (open streams are
drained for ``server.drain_timeout_s``, usage is flushed).
:class:`persona_mw_server.testing.ServerProcess` does exactly that.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from persona_mw import ConfigError, configure_logging
from persona_mw.cli.deployment import CONFIG_ENV as DEPLOYMENT_CONFIG_ENV
from persona_mw.cli.deployment import deprecated_env
from persona_mw.metrics import MULTIPROC_ENV

from .config import ServerConfig, load_server_config
from .keys import hash_key, new_key

__all__ = ["CONFIG_ENV", "app_from_env", "check_bind", "metrics_dir", "serve"]

#: How worker processes (``--workers N``) learn the config file: the one variable every entry
#: point reads (``PERSONA_MW_SERVER_CONFIG`` still works, with a deprecation warning).
CONFIG_ENV = DEPLOYMENT_CONFIG_ENV


def check_bind(host: str, config: ServerConfig) -> None:
    """Refuse to serve beyond loopback without API keys (anyone could then read every profile)."""
    if config.auth_enabled or _is_loopback(host):
        return
    raise ConfigError(
        f"refusing to listen on {host!r} without API keys: anyone who can reach it could call "
        "models and read every profile. Add server.api_keys to the config (make a key with "
        "`persona-mw serve --new-key`), or listen on 127.0.0.1",
        field="--host",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def metrics_dir() -> tuple[str, bool]:
    """The directory the workers of one ``--workers N`` run share their metrics in, and whether
    this run made it (and so removes it at exit).

    An operator's ``$PROMETHEUS_MULTIPROC_DIR`` is used as given, but must be empty: files left
    by an earlier run would be added to this run's totals.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        return tempfile.mkdtemp(prefix="persona-mw-metrics-"), True
    path = Path(given)
    if not path.is_dir():
        raise click.ClickException(
            f"{MULTIPROC_ENV}={given} is not a directory; create it (empty) or unset "
            f"{MULTIPROC_ENV} to let persona-mw serve make one per run"
        )
    mine = f"_{os.getpid()}.db"  # anything this process itself counted at import is no leftover
    if any(not f.name.endswith(mine) for f in path.glob("*.db")):
        raise click.ClickException(
            f"{MULTIPROC_ENV}={given} holds metric files from an earlier run, which would be "
            f"added to this run's totals; empty it, or unset {MULTIPROC_ENV} to let "
            "persona-mw serve make a fresh one per run"
        )
    return given, False


def app_from_env() -> object:
    """The ASGI app for one uvicorn worker process (``--workers N``): the config comes from
    ``$PERSONA_MW_CONFIG``, the shared metrics directory from
    ``$PROMETHEUS_MULTIPROC_DIR``."""
    from .app import create_app

    configure_logging(json=True)
    path = os.environ.get(CONFIG_ENV) or deprecated_env("PERSONA_MW_SERVER_CONFIG")
    app = create_app(load_server_config(path), freeze_heap=True)
    if os.environ.get(MULTIPROC_ENV):
        app.add_middleware(_MarkDeadAtShutdown)
    return app


class _MarkDeadAtShutdown:
    """When the worker's lifespan has shut down (streams drained, usage flushed, its books
    copied), drop its gauge files (open streams, queued usage events: ``livesum``) so the sums
    count live workers only; counters and histograms stay, they are totals. Not ``atexit``:
    uvicorn ends a worker by re-raising the SIGTERM it handled, which skips atexit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_and_mark(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
            await send(message)

        await self.app(scope, receive, send_and_mark)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    envvar=CONFIG_ENV,
    help="YAML config (persona_mw sections + server + LiteLLM-style model_list). "
    "Without it: in-memory store, the offline demo model, no auth, loopback only.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs server.api_keys.",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes; more than one needs a Redis store to share profiles.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="uvicorn's access log. Off: its paths contain user ids.",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=False,
    show_default=True,
    help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a reverse proxy). "
    "The server itself never uses the client address; only the access log shows it.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    help="Comma-separated addresses trusted to send proxy headers (with --proxy-headers).",
)
@click.option("--check-config", is_flag=True, help="Validate the config, print a summary and exit.")
@click.option(
    "--hash-key",
    "hash_stdin",
    is_flag=True,
    help="Read an API key on stdin, print its key_hash for the config, and exit.",
)
@click.option(
    "--new-key",
    "make_key",
    is_flag=True,
    help="Print a new random API key and its key_hash, and exit.",
)
def serve(
    config_path: str | None,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
    proxy_headers: bool,
    forwarded_allow_ips: str,
    check_config: bool,
    hash_stdin: bool,
    make_key: bool,
) -> None:
    """Serve the OpenAI-compatible personalising proxy (POST /v1/chat/completions, ...)."""
    if make_key:
        key = new_key()
        click.echo(f"key:      {key}\nkey_hash: {hash_key(key)}")
        click.echo("Give the key to the client; put only key_hash in server.api_keys.", err=True)
        return
    if hash_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            raise click.ClickException(
                'no key on stdin; e.g. `printf %s "$KEY" | persona-mw serve --hash-key`'
            )
        click.echo(hash_key(key))
        return
    config_path = config_path or deprecated_env("PERSONA_MW_SERVER_CONFIG")
    try:
        config = load_server_config(config_path)
        check_bind(host, config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if config.persona.store.url == "" and workers > 1:
        raise click.ClickException(
            "--workers > 1 needs a shared profile store: set store.url to a redis:// URL "
            "(each worker would otherwise keep its own in-memory profiles)"
        )
    if check_config:
        for line in config.ignored:
            click.echo(f"warning: {line}", err=True)
        names = list(dict.fromkeys(m["model_name"] for m in config.persona.model_list))
        store = "memory"
        if config.persona.store.url:
            if not asyncio.run(_store_answers(config)):
                raise click.ClickException(
                    f"the profile store at {_redacted(config.persona.store.url)} does not "
                    "answer; start it or fix store.url"
                )
            store = "redis (answers)"
        click.echo(
            f"config ok: models={names or ['persona-demo/offline']} store={store} "
            f"api_keys={len(config.api_keys)}"
        )
        return
    if not config.auth_enabled:
        click.echo(
            "WARNING: no API keys configured: serving WITHOUT AUTH on loopback only. "
            "Add server.api_keys (persona-mw serve --new-key) before exposing this server.",
            err=True,
        )
    configure_logging(json=True)
    import uvicorn

    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        # Off by default: uvicorn would parse each request's client address against the
        # trusted list (~1.5 % of a request's CPU here) for nothing but the access log.
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips,
        "timeout_graceful_shutdown": int(config.server.drain_timeout_s) or None,
        "lifespan": "on",
    }
    if workers == 1:
        from .app import create_app

        uvicorn.run(create_app(config, freeze_heap=True), **common)  # type: ignore[arg-type]
        return
    os.environ[CONFIG_ENV] = os.path.abspath(config_path) if config_path else ""
    # Each worker counts in its own files there; /metrics, in whichever worker answers, sums them.
    directory, ours = metrics_dir()
    os.environ[MULTIPROC_ENV] = directory
    try:
        uvicorn.run("persona_mw_server.cli:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    finally:
        if ours:
            shutil.rmtree(directory, ignore_errors=True)


async def _store_answers(config: ServerConfig) -> bool:
    """Ping the configured profile store through the middleware the server would build."""
    from persona_mw import build_middleware

    mw = build_middleware(config.persona)
    try:
        store: Any = mw.store
        for candidate in (store, getattr(store, "inner", None)):
            ping = getattr(candidate, "ping", None)
            if ping is not None:
                return bool(await ping())
        return True
    finally:
        await mw.aclose()


def _redacted(url: str) -> str:
    """A store URL without its password."""
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)
