"""Put a :class:`PersonalInstruction` into the messages, and take an old one out.

Pure functions on OpenAI-format message lists; they never modify the dicts they are given.

With a system role, the application's first system (or developer) message is kept and wrapped:
bounds block, a blank line, the application's text unchanged, a blank line, the
personalisation block. Without a system message, one is inserted at the top. For a model
without a system role, every system message and both blocks are folded, in that order, into a
``<persona-mw:folded>`` block at the start of the first user message (as LiteLLM itself does
for such models); the application's system text inside it is wrapped in
``<persona-mw:app-system>`` so that stripping the fold gives it back as a system message.

Every block we add is wrapped in a ``<persona-mw:...>`` tag. :func:`strip_personalisation`
removes such blocks from system, developer and user messages (separators included), so a
conversation replayed with the prompts we sent earlier is personalised once, not twice, and a
user who types a fake ``<persona-mw:bounds>`` block into a chat message loses it. User data
cannot contain the tags: the sanitiser turns ``<`` and ``>`` into single guillemets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from persona_mw.types import Message, content_text

from .instruction import BOUNDS_TAG, PERSONAL_TAG, PersonalInstruction

__all__ = [
    "APP_SYSTEM_TAG",
    "FOLDED_TAG",
    "SYSTEM_ROLES",
    "apply_instruction",
    "strip_personalisation",
]

FOLDED_TAG = "persona-mw:folded"
APP_SYSTEM_TAG = "persona-mw:app-system"
SYSTEM_ROLES = frozenset({"system", "developer"})
_SEP = "\n\n"


def _block(tag: str) -> str:
    return f"<{re.escape(tag)}>.*?</{re.escape(tag)}>"


# Leading blocks take the separator after them; the trailing block the separator before it.
_STRIP = (
    re.compile(_block(FOLDED_TAG) + f"(?:{_SEP})?", re.S),
    re.compile(_block(BOUNDS_TAG) + f"(?:{_SEP})?", re.S),
    re.compile(f"(?:{_SEP})?" + _block(PERSONAL_TAG), re.S),
)
_ANY_TAG = "<persona-mw:"
_FOLDED = re.compile(_block(FOLDED_TAG), re.S)
_APP_SYSTEM = re.compile(
    f"<{re.escape(APP_SYSTEM_TAG)}>\n(.*?)\n</{re.escape(APP_SYSTEM_TAG)}>", re.S
)


def _folded_app_system(text: str) -> list[str]:
    """The application's system texts inside the folded blocks of ``text``."""
    return [app for fold in _FOLDED.findall(text) for app in _APP_SYSTEM.findall(fold)]


def _strip_text(text: str) -> str:
    for pattern in _STRIP:
        text = pattern.sub("", text)
    return text


def _strip_content(content: Any) -> tuple[Any, bool]:
    """The content without our blocks, and whether it held nothing else."""
    if isinstance(content, str):
        stripped = _strip_text(content)
        return stripped, stripped == "" and content != ""
    if isinstance(content, list):
        parts = []
        for part in content:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and _ANY_TAG in text:
                stripped = _strip_text(text)
                if stripped == "" and text != "":
                    continue
                part = {**part, "text": stripped}
            parts.append(part)
        return parts, not parts and bool(content)
    return content, False


def strip_personalisation(messages: Sequence[Message]) -> list[Message]:
    """``messages`` without any block the personaliser added (a system message, or a user
    message holding only a folded block, that held only our text goes; other user messages
    stay, emptied if need be). Application system text that was folded into
    a user turn comes back as a system message at the top, unless the messages already have a
    system message with that text (the application sent it again)."""
    out: list[Message] = []
    unfolded: list[str] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if (role not in SYSTEM_ROLES and role != "user") or not _mentions_tag(content):
            out.append(message)
            continue
        folded = False
        if role == "user":
            text = content_text(content)
            folded = f"<{FOLDED_TAG}>" in text
            unfolded += _folded_app_system(text)
        stripped, only_ours = _strip_content(content)
        if only_ours and (role in SYSTEM_ROLES or folded):
            continue  # a message we created
        out.append({**message, "content": stripped})
    if unfolded:
        present = {content_text(m.get("content")) for m in out if m.get("role") in SYSTEM_ROLES}
        restored = [{"role": "system", "content": t} for t in unfolded if t not in present]
        out = [*restored, *out]
    return out


def _mentions_tag(content: Any) -> bool:
    if isinstance(content, str):
        return _ANY_TAG in content
    if isinstance(content, list):
        return any(
            isinstance(p, dict) and isinstance(p.get("text"), str) and _ANY_TAG in p["text"]
            for p in content
        )
    return False


def _text_part(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def apply_instruction(
    messages: Sequence[Message], instruction: PersonalInstruction, *, system_role: bool = True
) -> list[Message]:
    """``messages`` with ``instruction`` merged in (see the module docstring). Call
    :func:`strip_personalisation` first when the messages may hold an earlier instruction."""
    bounds, personal = instruction.bounds_text, instruction.personal_text
    if not bounds and not personal:
        return list(messages)
    if system_role:
        return _merge_system(messages, bounds, personal)
    return _fold(messages, bounds, personal)


def _merge_system(messages: Sequence[Message], bounds: str, personal: str) -> list[Message]:
    index = next((i for i, m in enumerate(messages) if m.get("role") in SYSTEM_ROLES), None)
    if index is None:
        text = _SEP.join(t for t in (bounds, personal) if t)
        return [{"role": "system", "content": text}, *messages]
    message = messages[index]
    content = message.get("content")
    merged: Any
    if isinstance(content, list):
        merged = [
            *([_text_part(bounds)] if bounds else []),
            *content,
            *([_text_part(personal)] if personal else []),
        ]
    else:
        merged = _SEP.join(t for t in (bounds, content or "", personal) if t)
    return [*messages[:index], {**message, "content": merged}, *messages[index + 1 :]]


def _fold(messages: Sequence[Message], bounds: str, personal: str) -> list[Message]:
    app_system = [
        f"<{APP_SYSTEM_TAG}>\n{text}\n</{APP_SYSTEM_TAG}>"
        for m in messages
        if m.get("role") in SYSTEM_ROLES and (text := content_text(m.get("content")))
    ]
    inner = _SEP.join(t for t in (bounds, *app_system, personal) if t)
    folded = f"<{FOLDED_TAG}>\n{inner}\n</{FOLDED_TAG}>"
    rest = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
    index = next((i for i, m in enumerate(rest) if m.get("role") == "user"), None)
    if index is None:
        return [{"role": "user", "content": folded}, *rest]
    message = rest[index]
    content = message.get("content")
    merged: Any
    if isinstance(content, list):
        merged = [_text_part(folded), *content]
    else:
        merged = _SEP.join(t for t in (folded, content or "") if t)
    return [*rest[:index], {**message, "content": merged}, *rest[index + 1 :]]
