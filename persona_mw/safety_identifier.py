"""Forward a keyed hash of the end user as ``safety_identifier`` to providers that accept it.

OpenAI asks apps to send a stable identifier per end user (``safety_identifier``) so that abuse
it detects can be traced to one user instead of the whole organisation. The input stage
:class:`SafetyIdentifierStage` (on with ``settings.safety_identifier: true``) sets it to the
user's keyed HMAC (the same pseudonym the logs carry, never the raw id, even when
``log_raw_user_id`` is on), and only for models whose every deployment LiteLLM says accepts the
parameter: other providers would reject it. Where it is sent, a value the application passed
itself is replaced: it could be a raw id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .observability import UserHasher

if TYPE_CHECKING:
    from .types import CallContext

__all__ = ["SafetyIdentifierStage", "accepts_safety_identifier"]

PARAM = "safety_identifier"


@lru_cache(maxsize=256)
def accepts_safety_identifier(model: str) -> bool:
    """Whether LiteLLM passes ``safety_identifier`` on for ``model`` (``provider/name``)."""
    import litellm

    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
        supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    except Exception:  # an unknown provider: do not send what it may reject
        return False
    return PARAM in (supported or [])


class SafetyIdentifierStage:
    """Input stage ``"safety_identifier"``: holds the hasher and the deployment names only."""

    name = "safety_identifier"

    def __init__(self, hasher: UserHasher, model_list: Sequence[Mapping[str, Any]] = ()) -> None:
        if getattr(hasher, "raw", False):
            raise ValueError("safety_identifier needs a keyed hasher, not raw ids")
        self.hasher = hasher
        self._deployments: dict[str, list[str]] = {}
        for entry in model_list:
            model = str(entry.get("litellm_params", {}).get("model", ""))
            self._deployments.setdefault(str(entry.get("model_name", "")), []).append(model)

    def accepts(self, model: str) -> bool:
        targets = self._deployments.get(model) or [model]
        return all(accepts_safety_identifier(t) for t in targets)

    async def __call__(self, ctx: CallContext) -> None:
        if self.accepts(ctx.model):
            ctx.llm_kwargs[PARAM] = self.hasher(ctx.user_id)
