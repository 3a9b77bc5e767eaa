"""The edge between LiteLLM's proxy dicts and persona_mw's types: pure functions, no I/O.

The proxy hands every hook an untyped ``data`` dict. Everything persona_mw needs is read from it
here, once, and the per-call :class:`~persona_mw.CallContext` travels back to the later hooks
inside the same request's metadata dict (never on the guardrail object, which is shared by all
requests in flight).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from persona_mw import CallContext

__all__ = [
    "ANONYMOUS_USER",
    "CALL_KEY",
    "ENFORCED_CALL_TYPES",
    "USER_HEADER",
    "CallHandle",
    "attach_call",
    "call_of",
    "call_type_name",
    "forget_user",
    "request_path",
    "resolve_user",
]

#: Key under the request's metadata dict that carries our per-call state between hooks.
CALL_KEY = "_persona_mw_call"
#: The user id for requests that name no user (no ``user`` field, no key user).
ANONYMOUS_USER = "anonymous"
#: The header that names the end user, as for ``persona-mw serve``; it wins over the body.
USER_HEADER = "X-Persona-User"
#: LiteLLM call types whose text the plugin holds to the bounds: chat completions
#: (``/v1/chat/completions``). Every other call type that reaches the guardrail is refused
#: unless the deployer lists it as unchecked (``persona_unchecked_routes``).
ENFORCED_CALL_TYPES = frozenset({"completion", "acompletion"})


class CallHandle:
    """Holds one request's CallContext inside LiteLLM's metadata dict.

    LiteLLM copies and serialises metadata on its logging paths; copying the handle returns the
    same handle, so every hook of one request sees the one context, and logs show a short repr
    instead of the user's profile.
    """

    __slots__ = ("ctx", "finished", "request_out")

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.finished = False
        #: Called when LiteLLM is about to send the model request (its pre-API-call event):
        #: starts the input checks waiting for it (:func:`persona_mw.llm.sent_soon`). None: no
        #: check waits.
        self.request_out: Callable[[], None] | None = None

    def __copy__(self) -> CallHandle:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> CallHandle:
        return self

    def __repr__(self) -> str:
        return f"<persona_mw call {self.ctx.request_id}>"

    def __str__(self) -> str:
        return repr(self)


def call_type_name(call_type: object) -> str:
    """LiteLLM passes its ``CallTypes`` enum on some routes and the bare string on others."""
    return str(getattr(call_type, "value", call_type))


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
    """Who the end user is, as ``persona-mw serve`` decides: the :data:`USER_HEADER` header
    (so a gateway in front can pin the user), else the request's ``user`` field (OpenAI's
    per-end-user field, what an app sets), else ``metadata.user_id``, else the proxy key's end
    user or owner, else :data:`ANONYMOUS_USER` (default profile; bounds still apply)."""
    metadata = data.get("metadata")
    candidates = (
        _header(data, USER_HEADER),
        data.get("user"),
        metadata.get("user_id") if isinstance(metadata, Mapping) else None,
        key_end_user_id,
        key_user_id,
    )
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return ANONYMOUS_USER


def forget_user(data: dict[str, Any]) -> None:
    """Remove the end user's id from what the proxy sends on: the ``user`` field, the
    ``metadata.user_id`` and a forwarded :data:`USER_HEADER` (docs/proxy.md: the id is never
    sent to the model provider). LiteLLM's own spend tracking took it from the key before."""
    data.pop("user", None)
    metadata = data.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("user_id", None)
    forwarded = data.get("headers")
    if isinstance(forwarded, dict):
        for name in [n for n in forwarded if n.lower() == USER_HEADER.lower()]:
            del forwarded[name]


def request_path(data: Mapping[str, Any]) -> str | None:
    """The path the client called (``/v1/responses``), as the proxy recorded the request."""
    request = data.get("proxy_server_request")
    url = request.get("url") if isinstance(request, Mapping) else None
    return urlsplit(url).path or None if isinstance(url, str) else None


def _header(data: Mapping[str, Any], name: str) -> str | None:
    """A request header as the proxy recorded it (``proxy_server_request.headers``, also
    copied into the metadata for guardrails), matched without regard to case."""
    for holder in (
        data.get("proxy_server_request"),
        data.get("metadata"),
        data.get("litellm_metadata"),
    ):
        headers = holder.get("headers") if isinstance(holder, Mapping) else None
        if isinstance(headers, Mapping):
            for key, value in headers.items():
                if isinstance(key, str) and key.lower() == name.lower() and value:
                    return str(value)
    return None
