"""What the input rules' hits mean for a call, as pure functions: the verdict on one input
(:func:`input_verdict`), the crisis interrupt a law asks for (:func:`crisis_interrupt`), the late
verdict of the model-backed rules found beside the model call (:func:`apply_late_verdict`), and
the one-text helpers the CLI and benchmarks use (:func:`check_input`, :func:`redact_last_user`).
:class:`~persona_mw.bounds.stages.BoundsInputStage` drives them; every name stays importable
from :mod:`persona_mw.bounds.stages`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..types import CallContext, Decision, Instruction, Message, Notice
from .classifiers import Classifiers
from .inputs import MessageText, current_turn_start, plan_input, scan_message
from .resolve import EffectivePolicy
from .scan import (
    Hit,
    RuleInForce,
    apply_redactions,
    decisions_for,
    instructions_for,
    notices_for,
)

__all__ = [
    "CrisisInterrupt",
    "InputVerdict",
    "apply_late_verdict",
    "check_input",
    "classify",
    "crisis_interrupt",
    "input_verdict",
    "redact_last_user",
]

_DEFAULT_BLOCK = "I can't help with that request."


@dataclass(frozen=True, slots=True)
class CrisisInterrupt:
    """What a law's "interrupt the conversation" (OR SB 1546 §3) does on this call: a crisis in
    the current turn replaces the reply with the protocol's response (``"reply"``); one earlier
    in the conversation carries the resources on this turn too (``"notice"``)."""

    position: Literal["reply", "notice"]
    text: str
    source: str


def crisis_interrupt(
    messages: Sequence[Message], checked: Sequence[tuple[MessageText, Sequence[Hit]]]
) -> CrisisInterrupt | None:
    """Pure: the interrupt due on this call, if a crisis-protocol rule (``crisis.*`` with a
    message: the referral) fired on any message of the conversation."""
    current = current_turn_start(messages)
    found: CrisisInterrupt | None = None
    for message, hits in checked:
        for hit in hits:
            rule = hit.rule.rule
            if hit.error or not rule.id.startswith("crisis.") or not rule.message:
                continue
            if hit.action not in ("append", "notify"):
                continue
            if message.index >= current:
                return CrisisInterrupt("reply", rule.message, rule.id)
            found = found or CrisisInterrupt("notice", rule.message, rule.id)
    return found


@dataclass(frozen=True, slots=True)
class InputVerdict:
    """What the input hits mean for the call: decisions, and either a reply (a block) or
    notices, instructions and whether to redact the prompt."""

    decisions: tuple[Decision, ...]
    reply: str | None
    notices: tuple[Notice, ...]
    instructions: tuple[Instruction, ...]
    redact: bool


def input_verdict(hits: Sequence[Hit]) -> InputVerdict:
    """Pure: the verdict on one input's hits. The strictest tier's block wins."""
    decisions = tuple(decisions_for(hits, "input"))
    block = _overall_block(hits)
    if block is not None:
        return InputVerdict(decisions, block.rule.rule.message or _DEFAULT_BLOCK, (), (), False)
    fired: dict[str, RuleInForce] = {h.rule.rule.id: h.rule for h in hits if not h.error}
    instructions = instructions_for(fired.values())
    return InputVerdict(
        decisions,
        None,
        tuple(notices_for(hits, set())),
        instructions,
        any(h.action == "redact" for h in hits),
    )


def _overall_block(hits: Sequence[Hit]) -> Hit | None:
    blocks = [h for h in hits if h.action == "block"]
    return min(blocks, key=lambda h: (h.rule.rule.tier, h.span.start)) if blocks else None


async def check_input(
    effective: EffectivePolicy,
    text: str,
    *,
    ctx: CallContext,
    classifiers: Classifiers | None = None,
    parts: Sequence[str] = (),
) -> list[Hit]:
    """Every input hit on ``text``: the synchronous rules, then the model-backed ones
    (concurrently; calls recorded on ``ctx.checks``). ``parts``: the message's text parts when
    ``text`` is them joined (each is scanned alone too,
    :func:`~persona_mw.bounds.inputs.scan_message`)."""
    if parts:
        hits = scan_message(effective.input.scan, MessageText(0, tuple(parts)))
    else:
        hits = list(effective.input.scan(text))
    if effective.input_classifiers:
        hits += await classify(ctx, classifiers or Classifiers(), effective, text)
    return hits


async def classify(
    ctx: CallContext, classifiers: Classifiers, effective: EffectivePolicy, text: str
) -> list[Hit]:
    found = await asyncio.gather(
        *(classifiers.check(ctx, r, text, stage="input") for r in effective.input_classifiers)
    )
    return [hit for hits in found for hit in hits]


def apply_late_verdict(
    ctx: CallContext,
    effective: EffectivePolicy,
    checked: Sequence[tuple[MessageText, Sequence[Hit]]],
) -> None:
    """What model-backed input hits found beside the model call do to the call (see
    :class:`InputClassifierCheck`)."""
    hits = [hit for _, found in checked for hit in found]
    block = _overall_block(hits)
    if block is not None:
        for _, found in checked:
            ctx.decisions.extend(decisions_for(found, "input"))
        ctx.reply = block.rule.rule.message or _DEFAULT_BLOCK
        ctx.reply_finish_reason = "content_filter"
        ctx.outcome = "blocked"
        return
    plan = plan_input(ctx.prompt_messages, checked)
    ctx.decisions.extend(plan.decisions)
    if effective.compliance.crisis == "interrupt":
        interrupt = crisis_interrupt(ctx.prompt_messages, checked)
        if interrupt is not None and interrupt.position == "reply":
            ctx.reply = interrupt.text
            ctx.reply_finish_reason = "content_filter"
            ctx.outcome = "blocked"
            return
    # one notice per rule and per text per call, as notices_for keeps them: the moderation
    # rule's crisis referral is not shown again after the classifier's showed the same text
    present = {n.source for n in ctx.notices} | {n.text for n in ctx.notices}
    ctx.notices.extend(n for n in plan.notices if n.source not in present and n.text not in present)


def redact_last_user(messages: list[Message], effective: EffectivePolicy) -> list[Message]:
    """A copy of ``messages`` with the last user message redacted (the app's list is never
    changed)."""
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") != "user":
            continue
        content = out[i].get("content")
        if isinstance(content, str):
            out[i] = {**out[i], "content": apply_redactions(content, effective.input.scan(content))}
        elif isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    part = {
                        **part,
                        "text": apply_redactions(part["text"], effective.input.scan(part["text"])),
                    }
                parts.append(part)
            out[i] = {**out[i], "content": parts}
        break
    return out
