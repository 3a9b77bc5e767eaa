"""The checks a call's arguments pass before anything runs, and small per-call helpers.

Every host's call enters through :meth:`persona_mw.Middleware.begin`; a bad argument is a
:class:`~persona_mw.errors.ConfigError` naming the field and what to pass instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .compliance import known_codes
from .errors import ConfigError
from .types import Message

__all__ = ["choices", "ms_since", "validate_call", "validate_jurisdictions"]


def validate_jurisdictions(codes: Sequence[str]) -> tuple[str, ...]:
    """``codes`` (one code given bare is one code) as a tuple, each a known jurisdiction."""
    if isinstance(codes, str):
        codes = (codes,)
    unknown = [code for code in codes if code not in known_codes()]
    if unknown:
        raise ConfigError(
            f"unknown jurisdiction(s) {unknown}; use codes from {list(known_codes())}",
            field="jurisdictions",
        )
    return tuple(codes)


def validate_call(user: str, model: str, messages: list[Message]) -> None:
    """The user, the model and the messages are what a call needs."""
    if not isinstance(user, str) or not user:
        raise ConfigError("`user` must be a non-empty string: the id of the end user", field="user")
    if not isinstance(model, str) or not model:
        raise ConfigError(
            "`model` must be a LiteLLM model name such as 'openai/gpt-4o-mini'", field="model"
        )
    if not isinstance(messages, list) or not messages:
        raise ConfigError(
            "`messages` must be a non-empty list of {'role', 'content'} dicts", field="messages"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ConfigError(
                f"messages[{i}] must be a dict with a 'role' (and usually 'content')",
                field="messages",
            )


def choices(params: Mapping[str, Any]) -> int:
    """How many choices the reply has (the OpenAI ``n``)."""
    n = params.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def ms_since(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0
