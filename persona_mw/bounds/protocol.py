"""The published crisis protocol of a law, as text generated from the packs that carry it out.

CA SB 243 §22602(b) and WA HB 2225 §4(1) ask the operator to publish its protocol; this is that
text, so what is published is what runs (``persona-mw policy protocol LAW``).
"""

from __future__ import annotations

from ..compliance.law import CrisisDuty, jurisdiction
from .packs import PACKS, pack_rules

__all__ = ["crisis_protocol_text"]

_COVERS = {
    "suicidal_ideation": "suicidal ideation",
    "self_harm": "self-harm",
    "harm_to_others": "harm to others",
    "eating_disorders": "eating disorders",
}


def crisis_protocol_text(code: str) -> str:
    """The protocol for law ``code`` in Markdown; PolicyError for an unknown code, ValueError
    for a law without a crisis-protocol duty."""
    law = jurisdiction(code)
    duties = [d for d in law.duties if isinstance(d, CrisisDuty)]
    if not duties:
        raise ValueError(f"{code} ({law.name}) asks for no crisis protocol")
    rules = {rule.id: rule for name in PACKS for rule in pack_rules(name)}
    lines = [f"# Crisis protocol: {law.name}", "", f"Statute: {law.citation}.", ""]
    for duty in duties:
        covers = ", ".join(_COVERS[c] for c in duty.covers)
        lines += [f"Required by {duty.cite}.", "", f"Covers: {covers}.", ""]
        if duty.behaviour == "interrupt":
            lines += [
                "When a message shows one of these, the conversation is interrupted: the "
                "assistant's reply is replaced by the response below, and every later turn of "
                "that conversation carries the same resources.",
                "",
            ]
        else:
            lines += [
                "When a message shows one of these, the response below is added to the "
                "assistant's reply, and the assistant is instructed to respond with care and to "
                "encourage contacting a crisis line.",
                "",
            ]
        for rule_id in duty.rules:
            rule = rules[rule_id]
            lines.append(f"## {rule_id}")
            lines.append("")
            if rule.description:
                lines += [rule.description, ""]
            if rule.message:
                lines += ["Response shown to the user:", "", f"> {rule.message.strip()}", ""]
    lines += [
        "Each referral is counted, without any personal data, for the annual report.",
    ]
    return "\n".join(lines) + "\n"
