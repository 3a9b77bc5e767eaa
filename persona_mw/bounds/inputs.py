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

Profile free text (:data:`PROFILE_TEXT_FIELDS`) reaches the model in the system prompt, so the
same synchronous rules check it: :func:`profile_text_findings` when it is written (the server
refuses with 422), :func:`profile_for_prompt` on every call (redacted; a field a blocking rule
fires on is left out), for text stored before or by a path that does not check.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..profile import Profile
from ..types import Decision, Instruction, Message, Notice, Span
from .resolve import EffectivePolicy
from .scan import Hit, RuleInForce, decisions_for, instructions_for, notices_for

__all__ = [
    "PROFILE_TEXT_FIELDS",
    "WITHHELD",
    "InputPlan",
    "MessageText",
    "ProfileTextFinding",
    "VerdictCache",
    "message_texts",
    "plan_input",
    "profile_for_prompt",
    "profile_text_findings",
    "profile_texts",
    "redact_parts",
    "scan_message",
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


def scan_message(scan: Callable[[str], Sequence[Hit]], message: MessageText) -> list[Hit]:
    """Every hit on ``message``: on its joined text (a match split across parts), and on each
    part alone (a match that joining glues to the previous part's last word, "is" + "4111 ..."
    → "is4111 ...", which a detector needing a boundary misses), in joined-text offsets."""
    hits = list(scan(message.text))
    if len(message.parts) < 2:
        return hits
    seen = {(h.rule.rule.id, h.span.start, h.span.end) for h in hits}
    start = 0
    for part in message.parts:
        for hit in scan(part):
            span = replace(hit.span, start=hit.span.start + start, end=hit.span.end + start)
            if (hit.rule.rule.id, span.start, span.end) not in seen:
                seen.add((hit.rule.rule.id, span.start, span.end))
                hits.append(replace(hit, span=span))
        start += len(part)
    return hits


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
        if message.index < current:
            found = [replace(d, history=True) for d in found]
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
    return InputPlan(tuple(decisions), None, tuple(notices), instructions_for(fired.values()), out)


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
        # One middleware may serve several event loops in threads (a sync app, LangChain).
        self._lock = threading.Lock()
        #: Texts checked because they were not cached (the hit rate, for benchmarks and tests).
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, effective: EffectivePolicy, text: str | tuple[str, ...]
    ) -> tuple[tuple[int, bytes], tuple[Hit, ...] | None]:
        """The key for ``text`` under ``effective``, and its cached hits (None: not cached).
        A message is keyed by its parts (``MessageText.parts``), not their joined text: the
        same text split differently holds different hits, at different offsets."""
        if isinstance(text, tuple):
            data, person = json.dumps(text).encode(errors="surrogatepass"), b"parts"
        else:
            data, person = text.encode(errors="surrogatepass"), b"text"
        digest = hashlib.blake2b(data, digest_size=16, person=person).digest()
        key = (id(effective), digest)
        with self._lock:
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
            with self._lock:
                self._entries[key] = (effective, found)
                if len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return found


#: Profile fields whose text the prompt carries (persona_mw/personalise/instruction.py).
PROFILE_TEXT_FIELDS = ("display_name", "own_rules", "self_description", "topics_to_avoid")


def profile_texts(profile: Profile) -> list[tuple[str, str]]:
    """``(field, text)`` for every non-empty profile text the model may read; list items are
    named as validation errors name them (``topics_to_avoid.1``)."""
    found = []
    for name in PROFILE_TEXT_FIELDS:
        value = getattr(profile, name)
        if isinstance(value, str) and value:
            found.append((name, value))
        elif isinstance(value, list):
            found += [(f"{name}.{i}", item) for i, item in enumerate(value) if item]
    return found


@dataclass(frozen=True, slots=True)
class ProfileTextFinding:
    """A rule that would block or redact a profile field's text. Carries no text of the field."""

    field: str
    rule_id: str
    tier: int
    action: str
    label: str

    def describe(self) -> str:
        verb = "blocks" if self.action == "block" else "redacts"
        return (
            f"{self.field}: rule {self.rule_id!r} (tier {self.tier}) {verb} what it found there "
            f"({self.label}); profile text reaches the model in the system prompt, so remove "
            "it from this field"
        )


def profile_text_findings(
    effective: EffectivePolicy, profile: Profile, *, since: Profile | None = None
) -> list[ProfileTextFinding]:
    """Pure: the block and redact hits of the synchronous input rules on the profile's text
    fields, or only on those that differ from ``since`` (text stored earlier does not stand in
    the way of an unrelated change)."""
    old = dict(profile_texts(since)) if since is not None else {}
    findings = []
    for field, text in profile_texts(profile):
        if old.get(field) == text:
            continue
        findings += [
            ProfileTextFinding(field, h.rule.rule.id, h.rule.rule.tier, h.action, h.span.label)
            for h in effective.input.scan(text)
            if h.action in ("block", "redact")
        ]
    return findings


def profile_for_prompt(
    profile: Profile, checked: Sequence[tuple[str, Sequence[Hit]]]
) -> tuple[Profile, list[Decision]]:
    """Pure: ``profile`` as the prompt may carry it, given each text field's hits: redacted, and
    a field (or list item) a blocking rule fires on left out. The stored profile is untouched."""
    texts = dict(profile_texts(profile))
    replaced: dict[str, str | None] = {}
    decisions: list[Decision] = []
    for field, hits in checked:
        if not any(h.action in ("block", "redact") for h in hits):
            continue
        if _strictest_block(hits) is not None:
            replaced[field] = None
        else:
            replaced[field] = redact_parts([texts[field]], hits)[0]
        decisions += [
            replace(
                d, reason=f"{d.reason}; in profile field {field}, before the prompt", history=True
            )
            for d in decisions_for(hits, "input")
        ]
    if not replaced:
        return profile, decisions
    update: dict[str, object] = {}
    for name in PROFILE_TEXT_FIELDS:
        value = getattr(profile, name)
        if isinstance(value, list):
            items = [replaced.get(f"{name}.{i}", item) for i, item in enumerate(value)]
            update[name] = [item for item in items if item]
        elif name in replaced:
            update[name] = replaced[name] or (None if name == "display_name" else "")
    return profile.model_copy(update=update), decisions
