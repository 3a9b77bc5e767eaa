"""``persona-mw check`` and ``persona-mw policy explain``: a policy evaluated like ``opa eval``.

Both are fast and offline: they never import litellm (judge rules run only with ``--judge``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import PersonaError
from ..profile import Profile, parse_profile
from ..types import CallContext, Decision
from .deployment import config_option, load_deployment, policy_paths

if TYPE_CHECKING:
    from ..bounds.policy import Rule

__all__ = ["check", "policy"]

_RANK = {"allow": 0, "log": 1, "notify": 2, "append": 3, "redact": 4, "block": 5}


def _load(
    config_path: str | None, policy_files: tuple[str, ...], profile_file: str | None
) -> tuple[Any, Profile]:
    from ..bounds import load_policy

    paths = policy_paths(load_deployment(config_path), policy_files)
    try:
        loaded = load_policy(*paths)
        if profile_file is None:
            profile = Profile.default("cli")
        else:
            profile = parse_profile(
                Path(profile_file).read_text(encoding="utf-8"), **_user_id(profile_file)
            )
    except PersonaError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"{profile_file}: cannot read the profile: {exc.strerror}"
        ) from None
    return loaded, profile


def _user_id(profile_file: str) -> dict[str, str]:
    try:
        data = json.loads(Path(profile_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {} if isinstance(data, dict) and data.get("user_id") else {"user_id": "cli"}


def _decision_json(decision: Decision, text: str) -> dict[str, Any]:
    return {
        "rule_id": decision.rule_id,
        "tier": decision.tier,
        "stage": decision.stage,
        "detector": decision.detector,
        "action": decision.action,
        "reason": decision.reason,
        "message": decision.message,
        "spans": [
            {"start": s.start, "end": s.end, "label": s.label, "text": text[s.start : s.end]}
            for s in decision.spans
        ],
    }


def _context(profile: Profile, text: str) -> CallContext:
    return CallContext(
        request_id="cli",
        user_id=profile.user_id,
        user_hash="cli",
        model="none",
        messages=[{"role": "user", "content": text}],
        prompt_messages=[{"role": "user", "content": text}],
        stream=False,
        llm_kwargs={},
        profile=profile,
        profile_source="default",
        started_at=datetime.now(UTC),
        surface="cli",
    )


_policy_option = click.option(
    "--policy",
    "policy_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Policy YAML file; repeat to merge several, in order (default: bounds.policies of "
    "--config).",
)


def _policy_files(function: Callable[..., Any]) -> Callable[..., Any]:
    return config_option(_policy_option(function))


_profile_file = click.option(
    "--profile",
    "profile_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A user profile (JSON) for tier 3.",
)


@click.command()
@_policy_files
@_profile_file
@click.option(
    "--stage",
    type=click.Choice(["input", "output"]),
    default="output",
    show_default=True,
    help="Check as user input or as model output.",
)
@click.option(
    "--stream-chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Output: feed the text through the stream filter in chunks of N characters.",
)
@click.option(
    "--judge",
    is_flag=True,
    help="Input: also run model-backed rules (moderation, judge: calls the models; imports "
    "litellm).",
)
def check(
    config_path: str | None,
    policy_files: tuple[str, ...],
    profile_file: str | None,
    stage: str,
    stream_chunk_size: int | None,
    judge: bool,
) -> None:
    """Check the text on stdin against a policy; print the decision as one JSON object."""
    from ..bounds import resolve
    from ..bounds.scan import StreamFilter, hold_back_for
    from ..bounds.stages import check_input, input_verdict, redact_last_user

    loaded, profile = _load(config_path, policy_files, profile_file)
    text = sys.stdin.read()
    effective = resolve(loaded, profile)
    ctx = _context(profile, text)
    result: dict[str, Any] = {"stage": stage, "policy_version": effective.policy_version}
    skipped = []
    if stage == "input":
        if judge:
            from ..bounds import BoundsConfig
            from ..bounds.classifiers import Classifiers

            # the deployment's models, timeout and LiteLLM arguments for the classifiers
            bounds = BoundsConfig.model_validate(load_deployment(config_path).bounds)
            ctx.policy = effective
            classifiers = Classifiers(bounds.classifier_settings())
            hits = asyncio.run(check_input(effective, text, ctx=ctx, classifiers=classifiers))
        else:
            hits = effective.input.scan(text)
            skipped = [r.rule.id for r in effective.input_classifiers]
        verdict = input_verdict(hits)
        decisions = list(verdict.decisions)
        if verdict.reply is not None:
            final = verdict.reply
        elif verdict.redact:
            final = redact_last_user(ctx.prompt_messages, effective)[-1]["content"]
        else:
            final = text
        notices = list(verdict.notices)
        result["instructions"] = [
            {"tier": i.tier, "source": i.source, "text": i.text}
            for i in (*effective.instructions, *verdict.instructions)
        ]
        stopped = verdict.reply is not None
    else:
        scanner = effective.output
        filt = StreamFilter(scanner, ctx, hold_back=hold_back_for(scanner))
        size = stream_chunk_size or max(1, len(text))
        released = "".join(filt.feed(text[i : i + size]) for i in range(0, len(text), size))
        released += filt.finish()
        stopped = filt.stopped
        decisions = list(ctx.decisions)
        notices = list(ctx.notices)
        final = _block_message(decisions) if stopped else released
        result["hold_back"] = filt.hold_back
    overall = max((d.action for d in decisions), key=lambda a: _RANK[a], default="allow")
    result.update(
        {
            "action": overall,
            "stopped": stopped,
            "text": final,
            "decisions": [_decision_json(d, text) for d in decisions],
            "notices": [
                {"position": n.position, "source": n.source, "text": n.text} for n in notices
            ],
        }
    )
    if skipped:
        result["skipped_judge_rules"] = skipped
    click.echo(json.dumps(result, ensure_ascii=False))


def _stream_hold(rule: Rule) -> str | None:
    """What a streamed reply waits for because of ``rule`` (output rules only)."""
    from ..bounds.detectors import MAX_SENTENCE
    from ..bounds.policy import ClassifierSpec, JudgeSpec, ModerationSpec, RelationshipSpec

    spec = rule.detector
    if rule.stage == "input" or spec is None:
        return None
    if isinstance(spec, JudgeSpec | ModerationSpec):
        return (
            f"windows of up to {spec.window} characters (each ends at a sentence or word "
            "break): a window leaves once the model has checked it, so a stream arrives in "
            "bursts, the whole reply when it is not streamed"
        )
    if isinstance(spec, RelationshipSpec | ClassifierSpec):
        limit = spec.max_sentence if isinstance(spec, RelationshipSpec) else MAX_SENTENCE
        hold = (
            f"the sentence being written, up to {limit} characters: it is scored whole, so a "
            "stream releases a sentence once it ends"
        )
        if rule.after_input:
            hold += f" (only in calls where {' or '.join(rule.after_input)} fired on input)"
        return hold
    return "only text that could still become a match (the word or candidate being written)"


def _block_message(decisions: list[Decision]) -> str:
    for decision in reversed(decisions):
        if decision.action == "block" and decision.message:
            return decision.message
    return "[response withheld by a content policy]"


@click.group()
def policy() -> None:
    """Inspect policies."""


@policy.command()
@_policy_files
@_profile_file
@click.option(
    "--jurisdiction",
    "jurisdictions",
    multiple=True,
    help="A law that applies to every user (the config's bounds.jurisdictions); repeatable. "
    "The profile's own `jurisdictions` are added.",
)
@click.option(
    "--misleading-context",
    is_flag=True,
    help="The deployment is one where a person could take the AI for a human "
    "(bounds.misleading_context).",
)
def explain(
    config_path: str | None,
    policy_files: tuple[str, ...],
    profile_file: str | None,
    jurisdictions: tuple[str, ...],
    misleading_context: bool,
) -> None:
    """Print the effective policy: every rule in force, its tier and why, and what is not;
    with laws, every duty and the law (and section) that requires it."""
    from ..bounds import resolve

    loaded, profile = _load(config_path, policy_files, profile_file)
    try:
        effective = resolve(
            loaded,
            profile,
            jurisdictions=jurisdictions,
            misleading_context=misleading_context,
        )
    except PersonaError as exc:
        raise click.ClickException(str(exc)) from None
    explained = effective.explain()
    holds = {r.rule.id: _stream_hold(r.rule) for r in effective.rules}
    for entry in explained["rules"]:
        if holds.get(entry["id"]):
            entry["stream_hold"] = holds[entry["id"]]
    explained["sources"] = list(loaded.sources)
    click.echo(json.dumps(explained, ensure_ascii=False, indent=2))


@policy.command()
@click.argument("law")
def protocol(law: str) -> None:
    """Print the published crisis protocol of LAW (a jurisdiction code), generated from the packs
    that carry it out."""
    from ..bounds.protocol import crisis_protocol_text

    try:
        click.echo(crisis_protocol_text(law), nl=False)
    except (PersonaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
