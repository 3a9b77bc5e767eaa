"""Settings of the personalisation stage: the ``personalise:`` section of a deployment config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persona_mw.errors import ConfigError

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
    try:
        return PersonaliseConfig.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = f"personalise.{loc}" if loc else "personalise"
        hint = (
            "unknown field; the fields are enabled, budget_tokens, max_user_text_chars, "
            "strong_preference (see docs/personalisation.md)"
            if first["type"] == "extra_forbidden"
            else first["msg"].removeprefix("Value error, ")
        )
        raise ConfigError(hint, source=source, field=field) from None
