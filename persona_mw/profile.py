"""The user profile: what a user tells us about themselves and how they want to be answered.

Fields follow PRISM (Kirk et al., NeurIPS 2024): stated preferences on a 0-100 scale, a free-text
"system string" of the user's own rules, a self-description, style, topics to avoid. On top:
the user's own stricter bounds and their choices among the deployer's user-adjustable options
(tier 3), consent flags, age band and time zone.

A profile is immutable; change one with ``profile.model_copy(update=...)`` or
:func:`persona_mw.update_profile`. ``version`` is owned by the store (optimistic concurrency).
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import time
from typing import Annotated, Any, Literal

import langcodes
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ProfileValidationError
from .jurisdiction_codes import known_codes

__all__ = [
    "MAX_PROFILE_BYTES",
    "AgeBand",
    "Consent",
    "Limits",
    "Profile",
    "StatedPreferences",
    "Style",
    "UserBounds",
    "parse_profile",
]

#: A profile serialised as JSON may not exceed this many bytes.
MAX_PROFILE_BYTES = 16 * 1024

AgeBand = Literal["unknown", "under_13", "13_15", "16_17", "18_plus"]
_MINOR_BANDS = frozenset({"under_13", "13_15", "16_17"})

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=False)]
Score = Annotated[int, Field(ge=0, le=100)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class StatedPreferences(_Frozen):
    """How much the user cares about each quality, 0 (not at all) to 100 (a great deal)."""

    values: Score | None = None
    creativity: Score | None = None
    fluency: Score | None = None
    factuality: Score | None = None
    diversity: Score | None = None
    safety: Score | None = None
    personalisation: Score | None = None
    helpfulness: Score | None = None


def _language_tag(tag: str) -> str:
    """A BCP 47 tag whose every subtag is in the IANA Language Subtag Registry (checked by
    ``langcodes``), in canonical form (``pt-br`` -> ``pt-BR``). Private-use (``x-...``) and
    extension subtags are refused: they may carry any text, and the tag is rendered outside the
    quoted user-data block of the prompt."""
    if not langcodes.tag_is_valid(tag):
        raise ValueError(
            f"{tag!r} is not a registered BCP 47 language tag; use one such as 'en', 'pt-BR' "
            "or 'zh-Hant'"
        )
    parsed = langcodes.Language.get(tag)
    if parsed.private or parsed.extensions:
        raise ValueError(
            f"{tag!r} has private-use or extension subtags; use the plain language tag "
            "(e.g. 'en-GB')"
        )
    return langcodes.standardize_tag(tag)


LanguageTag = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", max_length=35),
    AfterValidator(_language_tag),
]


class Style(_Frozen):
    """How the user wants answers written. ``None`` leaves the model's default."""

    tone: Literal["neutral", "friendly", "formal", "playful", "direct"] | None = None
    verbosity: Literal["terse", "brief", "normal", "detailed"] | None = None
    #: A registered BCP 47 tag, stored in canonical form.
    language: LanguageTag | None = None
    expertise: Literal["novice", "intermediate", "expert"] | None = None
    format: Literal["prose", "bullets", "markdown", "plain"] | None = None


class UserBounds(_Frozen):
    """The user's own stricter limits (tier 3 can only narrow)."""

    #: Phrases the user never wants to see in an answer (blocked on output).
    block_phrases: list[ShortText] = Field(default_factory=list, max_length=50)
    #: Extra built-in rule packs the user switches on for themselves (e.g. "profanity").
    enable_packs: list[ShortText] = Field(default_factory=list, max_length=10)


class Limits(_Frozen):
    """Self-set usage limits (tier 3)."""

    daily_cap_minutes: int | None = Field(default=None, ge=5, le=24 * 60)
    reminder_interval_minutes: int | None = Field(default=None, ge=10, le=24 * 60)
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None

    @model_validator(mode="after")
    def _quiet_hours_pair(self) -> Limits:
        if (self.quiet_hours_start is None) != (self.quiet_hours_end is None):
            raise ValueError("set both quiet_hours_start and quiet_hours_end, or neither")
        return self


class Consent(_Frozen):
    """What the user agreed to. Everything is off until the user turns it on."""

    personalisation: bool = False
    memory: bool = False
    text_analysis: bool = False


class Profile(_Frozen):
    """One user's profile. Unknown fields are rejected; every text field has a size limit."""

    schema_version: Literal[1] = 1
    user_id: UserId
    version: int = Field(default=0, ge=0, description="set by the store on every write")
    display_name: Annotated[str, StringConstraints(max_length=64)] | None = None
    preferences: StatedPreferences = StatedPreferences()
    own_rules: Annotated[str, StringConstraints(max_length=2000)] = ""
    self_description: Annotated[str, StringConstraints(max_length=2000)] = ""
    use_cases: list[ShortText] = Field(default_factory=list, max_length=20)
    style: Style = Style()
    topics_to_avoid: list[ShortText] = Field(default_factory=list, max_length=50)
    bounds: UserBounds = UserBounds()
    #: The user's choices among the deployer's user-adjustable options: option id -> value.
    adjustable: dict[ShortText, bool | int | str] = Field(default_factory=dict, max_length=50)
    limits: Limits = Limits()
    consent: Consent = Consent()
    age_band: AgeBand = "unknown"
    #: Set by the deployer when it knows the user is a minor; implied by a minor age band.
    known_minor: bool = False
    #: The laws that apply to this user (jurisdiction codes, docs/compliance.md), on top of the
    #: deployment's. Set by the deployer, like the age band: users cannot change it.
    jurisdictions: list[ShortText] = Field(default_factory=list, max_length=10)
    timezone: str = "UTC"

    @field_validator("jurisdictions")
    @classmethod
    def _known_laws(cls, value: list[str]) -> list[str]:
        unknown = [code for code in value if code not in known_codes()]
        if unknown:
            raise ValueError(
                f"unknown jurisdiction(s) {unknown}; use codes from {list(known_codes())}"
            )
        return sorted(set(value))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/London'"
            ) from None
        return value

    @field_validator("adjustable")
    @classmethod
    def _short_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, str) and len(item) > 100:
                raise ValueError(f"value of {key!r} is longer than 100 characters")
        return value

    @model_validator(mode="after")
    def _minor_and_size(self) -> Profile:
        if self.age_band in _MINOR_BANDS and not self.known_minor:
            object.__setattr__(self, "known_minor", True)
        size = len(self.model_dump_json().encode())
        if size > MAX_PROFILE_BYTES:
            raise ValueError(
                f"profile is {size} bytes as JSON, over the {MAX_PROFILE_BYTES}-byte limit; "
                "shorten own_rules, self_description or the lists"
            )
        return self

    @property
    def is_minor(self) -> bool:
        return self.known_minor

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def default(cls, user_id: str) -> Profile:
        """The profile of a user we know nothing about: no consent, so no personalisation."""
        return cls(user_id=user_id)


def parse_profile(data: str | bytes | dict[str, Any], **overrides: Any) -> Profile:
    """Build a :class:`Profile` from JSON or a dict, raising :class:`ProfileValidationError`.

    ``overrides`` are applied on top (for example ``user_id=`` or ``version=`` from a store).
    """
    try:
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise ProfileValidationError([("(root)", "a profile must be a JSON object")])
        return Profile.model_validate({**data, **overrides})
    except UnicodeDecodeError:
        raise ProfileValidationError([("(root)", "not valid UTF-8 text")]) from None
    except json.JSONDecodeError as exc:
        raise ProfileValidationError(
            [("(root)", f"not valid JSON: {exc.msg} at {exc.pos}")]
        ) from None
    except ValidationError as exc:
        raise ProfileValidationError(_problems(exc)) from None


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field; check the spelling (see docs/profile.md for the fields)"
        problems.append((path, message))
    return problems
