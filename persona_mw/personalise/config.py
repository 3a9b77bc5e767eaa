"""Settings of the personalisation stage: the ``personalise:`` section of a deployment config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from persona_mw.validation import validate_config

__all__ = ["PersonaliseConfig", "load_personalise_config"]


class PersonaliseConfig(BaseModel):
    """How much the personaliser may add to a prompt. Immutable; unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Off: no profile data reaches the prompt. Tier instructions are still placed (they are
    #: bounds, not personalisation).
    enabled: bool = True
    #: Tokens the added text may take (tier instructions included). Lower-priority profile parts
    #: are dropped to fit; tier instructions never are, even when they alone exceed it.
    budget_tokens: int = Field(default=500, ge=0, le=32_000)
    #: Each free-text field the user wrote (own rules, self-description) is cut to this length
    #: after sanitising, so one field cannot crowd out the rest of the budget.
    max_user_text_chars: int = Field(default=500, ge=20, le=2000)
    #: A stated preference (0-100) at or above this counts as strong and is phrased as guidance;
    #: at or below ``100 - strong_preference`` as a strong dislike. Others are left out.
    strong_preference: int = Field(default=80, ge=51, le=100)


def load_personalise_config(
    data: Mapping[str, Any], *, source: str = "config"
) -> PersonaliseConfig:
    """The ``personalise:`` section as a :class:`PersonaliseConfig`; a bad value raises
    :class:`ConfigError` naming ``personalise.<field>`` and what is allowed."""
    return validate_config(PersonaliseConfig, dict(data), source=source, prefix="personalise")
