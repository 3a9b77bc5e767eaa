"""Every input message through the input rules: all roles, all turns, every text part.

A message's text is its text parts joined with nothing between them (the model reads them as
one text), so a phrase or a card number split across two parts is still found. What a rule does
depends on where it fires (docs/policies.md, "Input: every message"):

==========  ============================================  ========================================
action      the current turn (the last user message and   an earlier message (history, the
            everything after it: prefill, tool results)   system prompt, earlier tool results)
==========  ============================================  ========================================
block       the request is answered with the rule's       the message is withheld: its text is
            message, the model is not called              replaced by :data:`WITHHELD`
redact      redacted before the model sees it             the same
append /    the notice is added to the reply              no notice (it was shown on its own
notify                                                    turn); the rule's instruction still
                                                          reaches the model
==========  ============================================  ========================================

Replayed history costs only the new messages: :class:`VerdictCache` keeps each text's hits
under the effective policy that found them, keyed by a digest of the text.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..types import Decision, Instruction, Message, Notice, Span
from .resolve import EffectivePolicy
from .scan import Hit, RuleInForce, decisions_for, notices_for

__all__ = [
    "WITHHELD",
    "InputPlan",
    "MessageText",
    "VerdictCache",
    "message_texts",
    "plan_input",
    "redact_parts",
]

#: What the model sees instead of an earlier message a blocking rule fired on.
WITHHELD = "[message withheld: it broke a content rule]"

_DEFAULT_BLOCK = "I can't help with that request."


@dataclass(frozen=True, slots=True)
class MessageText:
    """The checkable text of one message: its text parts, in order (a string content is one)."""

    index: int
    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.parts)


def message_texts(messages: Sequence[Message]) -> list[MessageText]:
    """Every message that carries text, whatever its role."""
    found = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            parts: tuple[str, ...] = (content,)
        elif isinstance(content, list):
            parts = tuple(
                p["text"]
                for p in content
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )
        else:
            continue
        if any(parts):
            found.append(MessageText(i, parts))
    return found


def current_turn_start(messages: Sequence[Message]) -> int:
    """Index of the last user message (the current turn starts there); 0 when there is none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return 0


@dataclass(frozen=True, slots=True)
class InputPlan:
    """What the input hits mean for the call. ``reply`` is set when the request is blocked;
    otherwise ``messages`` is the prompt to send (the app's list is never changed)."""

    decisions: tuple[Decision, ...]
    reply: str | None
    notices: tuple[Notice, ...]
    instructions: tuple[Instruction, ...]
    messages: list[Message]


def plan_input(
    messages: Sequence[Message], checked: Sequence[tuple[MessageText, Sequence[Hit]]]
) -> InputPlan:
    """Pure: the verdict on every message's hits (see the module docstring's table)."""
    current = current_turn_start(messages)
    decisions: list[Decision] = []
    blocks: list[Hit] = []
    fired: dict[str, RuleInForce] = {}
    notices: list[Notice] = []
    seen: set[str] = set()
    out = list(messages)
    for message, hits in checked:
        if not hits:
            continue
        found = decisions_for(hits, "input")
        block = _strictest_block(hits)
        if block is not None and message.index >= current:
            decisions += found
            blocks.append(block)
            continue
        if block is not None:
            decisions += [_withheld(d, len(message.text)) for d in found]
            out[message.index] = {**out[message.index], "content": WITHHELD}
            continue
        decisions += found
        fired.update((h.rule.rule.id, h.rule) for h in hits if not h.error)
        if message.index >= current:
            notices += notices_for(hits, seen)
        if any(h.action == "redact" for h in hits):
            out[message.index] = _with_parts(out[message.index], redact_parts(message.parts, hits))
    if blocks:
        block = min(blocks, key=lambda h: h.rule.rule.tier)
        reply = block.rule.rule.message or _DEFAULT_BLOCK
        return InputPlan(tuple(decisions), reply, (), (), list(messages))
    instructions = tuple(
        Instruction(r.rule.tier, r.rule.id, r.rule.instruction)
        for r in sorted(fired.values(), key=lambda r: r.rule.tier)
        if r.rule.instruction
    )
    return InputPlan(tuple(decisions), None, tuple(notices), instructions, out)


def _withheld(decision: Decision, length: int) -> Decision:
    """A block in an earlier message withholds that message: say so, not "block"."""
    if decision.action != "block":
        return decision
    return replace(
        decision,
        action="redact",
        spans=(Span(0, length, "withheld"),),
        reason=f"{decision.reason}; in an earlier message: withheld from the model",
    )


def _strictest_block(hits: Sequence[Hit]) -> Hit | None:
    blocks = [h for h in hits if h.action == "block"]
    return min(blocks, key=lambda h: (h.rule.rule.tier, h.span.start)) if blocks else None


def redact_parts(parts: Sequence[str], hits: Sequence[Hit]) -> list[str]:
    """``parts`` with every redact hit replaced; hit spans are offsets in the joined parts. A
    span across a part boundary is replaced once, in the part where it starts; overlapping
    redactions merge and the earliest (then longest) hit's replacement is used."""
    spans: list[tuple[int, int, str]] = []
    for hit in sorted(
        (h for h in hits if h.action == "redact"), key=lambda h: (h.span.start, -h.span.end)
    ):
        if spans and hit.span.start < spans[-1][1]:
            start, end, replacement = spans[-1]
            spans[-1] = (start, max(end, hit.span.end), replacement)
            continue
        replacement = hit.rule.rule.replacement.replace("{label}", hit.span.label)
        spans.append((hit.span.start, hit.span.end, replacement))
    joined = "".join(parts)
    out = []
    start = 0
    for part in parts:
        end = start + len(part)
        pieces = []
        pos = start
        for s, e, replacement in spans:
            if e <= start or s >= end:
                continue
            if s >= start:
                pieces += [joined[pos:s], replacement]
            pos = min(max(pos, e), end)
        pieces.append(joined[pos:end])
        out.append("".join(pieces))
        start = end
    return out


def _with_parts(message: Message, parts: Sequence[str]) -> Message:
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": parts[0]}
    replaced = iter(parts)
    new = [
        {**p, "text": next(replaced)}
        if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        else p
        for p in content or []
    ]
    return {**message, "content": new}


class VerdictCache:
    """Hits per (effective policy, text digest), least recently used out first.

    The entry holds the effective policy it was found under, so a key's ``id`` can never be
    reused by another policy while the entry lives. Detector failures are not cached: the next
    call tries again.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, bytes], tuple[EffectivePolicy, tuple[Hit, ...]]]
        self._entries = OrderedDict()
        #: Texts checked because they were not cached (the hit rate, for benchmarks and tests).
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, effective: EffectivePolicy, text: str
    ) -> tuple[tuple[int, bytes], tuple[Hit, ...] | None]:
        """The key for ``text`` under ``effective``, and its cached hits (None: not cached)."""
        digest = hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=16).digest()
        key = (id(effective), digest)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is effective:
            self._entries.move_to_end(key)
            return key, entry[1]
        self.misses += 1
        return key, None

    def remember(
        self, key: tuple[int, bytes], effective: EffectivePolicy, hits: Sequence[Hit]
    ) -> tuple[Hit, ...]:
        """Keep ``hits`` under ``key`` (unless a detector failed) and return them."""
        found = tuple(hits)
        if not any(h.error for h in found):
            self._entries[key] = (effective, found)
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return found
