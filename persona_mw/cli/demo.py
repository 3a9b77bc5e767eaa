"""``persona-mw demo``: two users, one scripted conversation, two personalised results.

Runs on embedded defaults (in-memory store, the offline demo model) with nothing to install or
start. ``--model`` (or ``PERSONA_MW_MODEL``) switches to any LiteLLM model, e.g.
``openai/gpt-4o-mini`` with ``OPENAI_API_KEY`` set.
"""

from __future__ import annotations

import asyncio
import io
import json
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import click

__all__ = ["DEMO_PROFILES", "DEMO_SCRIPT", "demo"]

DEMO_PROFILES: dict[str, dict[str, Any]] = {
    "ada": {
        "display_name": "Ada",
        "style": {
            "tone": "direct",
            "verbosity": "terse",
            "language": "en",
            "expertise": "expert",
            "format": "bullets",
        },
        "own_rules": "Skip the pleasantries. Name the tool or command to use.",
        "preferences": {"factuality": 95, "creativity": 20},
        "age_band": "18_plus",
        "timezone": "Europe/London",
        "consent": {"personalisation": True, "memory": True, "text_analysis": True},
    },
    "sam": {
        "display_name": "Sam",
        "style": {
            "tone": "friendly",
            "verbosity": "detailed",
            "language": "es",
            "expertise": "novice",
            "format": "prose",
        },
        "self_description": "Estudiante de 14 años, empezando a programar.",
        "topics_to_avoid": ["dieting"],
        "age_band": "13_15",
        "timezone": "America/Mexico_City",
        "consent": {"personalisation": True, "memory": False, "text_analysis": True},
    },
}

DEMO_SCRIPT: list[str] = [
    "My Python code is slow. What should I do?",
    "How can I sleep better?",
    "Write to me at ada@example.com with a summary.",
]


class _RecordingClient:
    """Wraps the LLM client to show exactly what the model was sent."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last_messages: list[dict[str, Any]] = []

    async def acompletion(self, **kwargs: Any) -> Any:
        self.last_messages = kwargs.get("messages", [])
        return await self.inner.acompletion(**kwargs)

    async def astream(self, **kwargs: Any) -> AsyncIterator[Any]:
        self.last_messages = kwargs.get("messages", [])
        async for chunk in self.inner.astream(**kwargs):
            yield chunk


def _indent(text: str, prefix: str = "    ", width: int = 100) -> str:
    lines = []
    for raw in str(text).splitlines() or [""]:
        lines.extend(
            textwrap.wrap(raw, width, initial_indent=prefix, subsequent_indent=prefix) or [prefix]
        )
    return "\n".join(lines)


async def _run(model: str | None, show_prompt: bool, stream_last: bool) -> None:
    from ..app import build_middleware
    from ..config import load_config
    from ..demo_model import DEMO_MODEL, LABEL, register_demo_model
    from ..llm import LiteLLMClient
    from ..observability import configure_logging
    from ..profile import parse_profile

    log_buffer = io.StringIO()
    configure_logging(json=True, stream=log_buffer)
    offline = model is None
    model = register_demo_model() if model is None else model
    recorder = _RecordingClient(LiteLLMClient())
    config = load_config(**_demo_sections())
    mw = build_middleware(config, llm=recorder)
    label = f"{DEMO_MODEL} {LABEL}, no network" if offline else f"{model} (real model)"
    click.secho("persona_mw demo", bold=True)
    click.echo(
        f"model: {label}\nstore: embedded in-memory\nstages: "
        + " -> ".join(
            [
                "profile",
                *[s.name for s in mw.input_stages],
                "model",
                *[s.name for s in mw.output_stages],
                *[s.name for s in mw.finish_stages],
                "log",
            ]
        )
    )
    started = time.perf_counter()
    try:
        for user, fields in DEMO_PROFILES.items():
            await mw.store.put(parse_profile(fields, user_id=user))
        for user, fields in DEMO_PROFILES.items():
            style = fields["style"]
            click.secho(
                f"\n=== {user}: {fields['age_band'].replace('_', '-')}, {style['expertise']}, "
                f"{style['verbosity']}, {style['tone']}, language {style['language']} ===",
                bold=True,
            )
            for n, question in enumerate(DEMO_SCRIPT):
                stream = stream_last and n == len(DEMO_SCRIPT) - 1
                click.secho(f"\n> {question}" + ("   (streamed)" if stream else ""), fg="cyan")
                history = [{"role": "user", "content": question}]
                if stream:
                    parts = []
                    async for chunk in mw.astream(user=user, model=model, messages=history):
                        parts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                    reply = "".join(parts)
                else:
                    response = await mw.acompletion(user=user, model=model, messages=history)
                    reply = response.choices[0].message.content or ""
                if show_prompt:
                    click.echo("  prompt sent to the model:")
                    for message in recorder.last_messages:
                        click.echo(
                            _indent(f"[{message['role']}] {message.get('content')}", "    | ")
                        )
                click.echo("  reply:")
                click.echo(_indent(reply))
                click.echo("  operator log:")
                for line in log_buffer.getvalue().splitlines():
                    click.echo("    " + _summarise(line))
                log_buffer.seek(0)
                log_buffer.truncate()
    finally:
        await mw.aclose()
        for line in log_buffer.getvalue().splitlines():
            click.echo("    " + _summarise(line))
    click.echo(
        f"\ndone in {time.perf_counter() - started:.1f} s. The same question, two profiles: "
        "compare the prompts and the replies above."
    )


def _summarise(line: str) -> str:
    """The operator log line, compacted for the terminal (timings rounded, empty keys dropped)."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return line
    event = {k: v for k, v in event.items() if v not in (None, [], {}, "")}
    if "timings_ms" in event:
        event["timings_ms"] = {k: round(v, 2) for k, v in event["timings_ms"].items()}
    return json.dumps(event, ensure_ascii=False)


def _demo_sections() -> dict[str, Any]:
    """The demo deployment: the built-in packs a deployer would switch on."""
    from ..app import demo_config_sections

    return demo_config_sections()


@click.command()
@click.option(
    "--model",
    envvar="PERSONA_MW_MODEL",
    default=None,
    help="Any LiteLLM model (e.g. openai/gpt-4o-mini); default: the offline demo model.",
)
@click.option(
    "--show-prompt/--no-show-prompt",
    default=True,
    show_default=True,
    help="Print the personalised prompt each request sent to the model.",
)
@click.option(
    "--stream/--no-stream",
    "stream_last",
    default=True,
    show_default=True,
    help="Stream the last answer of each conversation.",
)
def demo(model: str | None, show_prompt: bool, stream_last: bool) -> None:
    """Run a scripted conversation for two users with different profiles.

    Shows how their prompts and answers differ and prints the operator log lines. Offline by
    default: the model is a labelled stand-in that shapes canned answers from the prompt.
    """
    asyncio.run(_run(model, show_prompt, stream_last))
