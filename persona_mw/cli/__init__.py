"""The ``persona-mw`` command. Subcommands load lazily so ``--help`` stays fast (no litellm).

Built-in subcommands live in this package; integrations (e.g. ``serve``) add theirs through the
``persona_mw.commands`` entry-point group, so the core never imports them.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any

import click

__all__ = ["main"]

# name -> (module:attribute, one-line help shown by --help without importing the module)
_BUILTIN: dict[str, tuple[str, str]] = {
    "demo": (
        "persona_mw.cli.demo:demo",
        "Run the offline demo: two users, two personalised conversations.",
    ),
    "profile": ("persona_mw.cli.profile:profile", "See, change or erase a user's profile."),
    "check": (
        "persona_mw.cli.bounds:check",
        "Check text from stdin against a policy; print the decision as JSON.",
    ),
    "policy": (
        "persona_mw.cli.bounds:policy",
        "Explain a policy (every rule and duty in force, and why); print a law's crisis protocol.",
    ),
    "score": (
        "persona_mw.cli.score:score",
        "Score texts (JSON lines on stdin), e.g. for relationship-seeking.",
    ),
    "signals": (
        "persona_mw.cli.signals:signals",
        "Compute dependence signals from a file of usage events.",
    ),
    "report": (
        "persona_mw.cli.signals:report",
        "Report a user's signals, or non-identifying aggregates.",
    ),
}
_PLUGIN_GROUP = "persona_mw.commands"


class _LazyGroup(click.Group):
    def _plugins(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for ep in entry_points(group=_PLUGIN_GROUP):
            found[ep.name] = (ep.value, "(from an installed integration)")
        return found

    def _table(self) -> dict[str, tuple[str, str]]:
        return {**self._plugins(), **_BUILTIN}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._table())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._table().get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target[0].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise click.ClickException(
                f"the '{cmd_name}' command is not available ({exc.name} is missing); "
                "install the extra it needs, e.g. pip install 'persona-mw[server]'"
            ) from None
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        plugins = self._plugins()
        for name, (_, short) in sorted(self._table().items()):
            if name == "serve" and name in plugins:
                short = "Serve the OpenAI-compatible personalising proxy."
            rows.append((name, short))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persona-mw")
def cli() -> None:
    """persona_mw: personalisation within bounds, between your app and any LLM.

    Environment: PERSONA_MW_CONFIG (the deployment's config file, as --config: store,
    policies, signals), PERSONA_MW_MODEL (model for the demo), PERSONA_MW_HASH_SECRET (key for
    the user-id hash in logs). PERSONA_MW_REDIS_URL still works but is deprecated.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="persona-mw")
