"""What LiteLLM knows about a model that the personaliser needs: system role and tokenizer.

Both answers are cached per model name (LiteLLM's lookups cost ~0.1-8 ms; a deployment uses a
handful of models). LiteLLM is imported on first use, never at import time.

A model LiteLLM has no data for is assumed to take a system role (almost every chat model
does); ``litellm.supports_system_messages`` itself answers False for unknown models, so we ask
it only about models in its price/feature list that say something about system messages.
Token counts use ``litellm.token_counter`` for models LiteLLM knows, and ``estimate_tokens``
(characters / 4) for the rest, e.g. a Router alias or a custom provider. Counts are memoised
per (model, text): the bounds block is the same on almost every request and a user's block the
same until their profile changes, and tokenising costs ~50-150 µs a block.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from persona_mw.llm import import_litellm

from .instruction import estimate_tokens

__all__ = ["supports_system_role", "token_counter_for"]


def _entry(model: str) -> dict[str, Any] | None:
    cost = import_litellm().model_cost
    entry = cost.get(model)
    if entry is None and "/" in model:  # "openai/gpt-4o-mini" is listed as "gpt-4o-mini"
        entry = cost.get(model.split("/", 1)[1])
    return entry if isinstance(entry, dict) else None


@lru_cache(maxsize=256)
def supports_system_role(model: str) -> bool:
    """Whether ``model`` accepts a ``system`` message (True when LiteLLM does not know)."""
    entry = _entry(model)
    if entry is None or entry.get("supports_system_messages") is None:
        return True
    litellm = import_litellm()
    return bool(litellm.supports_system_messages(model=model, custom_llm_provider=None))


@lru_cache(maxsize=4096)
def _litellm_count(model: str, text: str) -> int:
    return int(import_litellm().token_counter(model=model, text=text))


@lru_cache(maxsize=256)
def token_counter_for(model: str) -> Callable[[str], int]:
    """A function counting the tokens of a text for ``model``."""
    if _entry(model) is None:
        return estimate_tokens
    return partial(_litellm_count, model)
