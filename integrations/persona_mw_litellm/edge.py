"""The edge between LiteLLM's proxy dicts and persona_mw's types: pure functions, no I/O.

The proxy hands every hook an untyped ``data`` dict. Everything persona_mw needs is read from it
here, once, and the per-call :class:`~persona_mw.CallContext` travels back to the later hooks
inside the same request's metadata dict (never on the guardrail object, which is shared by all
requests in flight).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persona_mw import CallContext

__all__ = [
    "ANONYMOUS_USER",
    "CALL_KEY",
    "CallHandle",
    "attach_call",
    "call_of",
    "is_chat_call",
    "resolve_user",
]

#: Key under the request's metadata dict that carries our per-call state between hooks.
CALL_KEY = "_persona_mw_call"
#: The user id for requests that name no user (no ``user`` field, no key user).
ANONYMOUS_USER = "anonymous"
_CHAT_CALL_TYPES = frozenset({"completion", "acompletion"})


class CallHandle:
    """Holds one request's CallContext inside LiteLLM's metadata dict.

    LiteLLM copies and serialises metadata on its logging paths; copying the handle returns the
    same handle, so every hook of one request sees the one context, and logs show a short repr
    instead of the user's profile.
    """

    __slots__ = ("ctx", "finished")

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.finished = False

    def __copy__(self) -> CallHandle:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> CallHandle:
        return self

    def __repr__(self) -> str:
        return f"<persona_mw call {self.ctx.request_id}>"

    def __str__(self) -> str:
        return repr(self)


def is_chat_call(call_type: object) -> bool:
    """Only chat completions carry messages we can personalise and check."""
    value = getattr(call_type, "value", call_type)
    return value in _CHAT_CALL_TYPES


def _metadata_key(data: Mapping[str, Any]) -> str:
    # The proxy uses "litellm_metadata" on some routes and "metadata" on chat completions.
    return "litellm_metadata" if isinstance(data.get("litellm_metadata"), dict) else "metadata"


def attach_call(data: dict[str, Any], ctx: CallContext) -> CallHandle:
    """Store the call's context in this request's metadata dict and return its handle."""
    key = _metadata_key(data)
    metadata = data.get(key)
    if not isinstance(metadata, dict):
        metadata = {}
        data[key] = metadata
    handle = CallHandle(ctx)
    metadata[CALL_KEY] = handle
    return handle


def call_of(data: Mapping[str, Any] | None) -> CallHandle | None:
    """The handle the pre-call hook attached to this request, if any."""
    if not data:
        return None
    for key in ("metadata", "litellm_metadata"):
        metadata = data.get(key)
        if isinstance(metadata, Mapping):
            handle = metadata.get(CALL_KEY)
            if isinstance(handle, CallHandle):
                return handle
    litellm_params = data.get("litellm_params")
    if isinstance(litellm_params, Mapping):  # logging callbacks see the request nested here
        return call_of(litellm_params)
    return None


def resolve_user(
    data: Mapping[str, Any], key_user_id: str | None, key_end_user_id: str | None
) -> str:
    """Who the end user is: the request's ``user`` field (OpenAI's per-end-user field, what an
    app sets), else ``metadata.user_id``, else the proxy key's end user or owner, else
    :data:`ANONYMOUS_USER` (default profile; bounds still apply)."""
    user = data.get("user")
    if isinstance(user, str) and user:
        return user
    metadata = data.get("metadata")
    if isinstance(metadata, Mapping):
        from_metadata = metadata.get("user_id")
        if isinstance(from_metadata, str) and from_metadata:
            return from_metadata
    for candidate in (key_end_user_id, key_user_id):
        if candidate:
            return candidate
    return ANONYMOUS_USER
