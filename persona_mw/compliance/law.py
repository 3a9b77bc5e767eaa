"""Jurisdiction packs: one YAML file per law in ``persona_mw/compliance/jurisdictions/``.

A file lists the duties a law puts on a deployer that a middleware can carry out, each with the
section of the statute it comes from. Files are tier 1: shipped with the package, read once,
never changed by a deployer, a profile or a request. Adding a law is adding a file (its ``code``
is its file name); the format is documented in docs/compliance.md. A bad file fails with a
:class:`~persona_mw.errors.PolicyError` naming the file, the field and the fix.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import PolicyError
from ..jurisdiction_codes import known_codes
from ..validation import config_error

__all__ = [
    "CODE_PATTERN",
    "ContentBanDuty",
    "CrisisDuty",
    "DisclosureDuty",
    "Duty",
    "Jurisdiction",
    "MarkingDuty",
    "NeverClaimHumanDuty",
    "ReminderDuty",
    "ReportDuty",
    "jurisdiction",
    "known_codes",
    "parse_jurisdiction",
]

CODE_PATTERN = r"^[a-z]{2}(-[a-z0-9]+)+$"
DutyAudience = Literal["all", "minors", "adults"]
#: What a statutory report may count: aggregates only, never a user or a text.
ReportFigure = Literal["crisis_referrals", "disclosures_shown", "reminders_shown", "users_in_scope"]


class _Duty(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The section of the statute this duty comes from, as the report and docs print it.
    cite: str = Field(min_length=3, max_length=400)
    #: Built-in pack rules (``pack.rule`` ids) that carry the duty out; they become tier 1. The
    #: packs build on the laws, so the bounds check these ids when they apply a law
    #: (:func:`persona_mw.bounds.packs.check_law_rules`).
    rules: tuple[str, ...] = ()


class DisclosureDuty(_Duty):
    """Tell the user they are talking to an AI: at the start (the day's first interaction, or
    the very first one) and, with ``every_hours``, again during continuing interaction."""

    kind: Literal["disclosure"] = "disclosure"
    audience: DutyAudience = "all"
    at_start: Literal["daily", "first", "none"] = "daily"
    every_hours: float | None = Field(default=None, gt=0, le=24)
    #: ``misleading_context``: only where the deployer marks the deployment as one where a
    #: person could take the AI for a human (``bounds.misleading_context``).
    condition: Literal["misleading_context"] | None = None

    @model_validator(mode="after")
    def _says_when(self) -> DisclosureDuty:
        if self.at_start == "none" and self.every_hours is None:
            raise ValueError("a disclosure needs `at_start` (daily or first) or `every_hours`")
        return self


class ReminderDuty(_Duty):
    """A break reminder that also says "this is an AI", every ``every_hours`` of a session."""

    kind: Literal["reminder"] = "reminder"
    audience: DutyAudience = "minors"
    every_hours: float = Field(gt=0, le=24)


class CrisisDuty(_Duty):
    """A crisis protocol: ``refer`` adds crisis resources to the reply; ``interrupt`` replaces the
    reply with the protocol's response, and the conversation's later turns carry the resources."""

    kind: Literal["crisis_protocol"] = "crisis_protocol"
    behaviour: Literal["refer", "interrupt"] = "refer"
    covers: tuple[
        Literal["suicidal_ideation", "self_harm", "harm_to_others", "eating_disorders"], ...
    ] = Field(min_length=1)
    #: The protocol must be published (``persona-mw policy protocol LAW`` prints it).
    published: bool = False


class ContentBanDuty(_Duty):
    """Content kept from an audience, carried out by the pack rules in ``rules``."""

    kind: Literal["content_ban"] = "content_ban"
    audience: DutyAudience = "minors"
    covers: tuple[Literal["sexual_content", "manipulative_engagement"], ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _carried_out(self) -> ContentBanDuty:
        if not self.rules:
            raise ValueError("a content ban needs `rules`: the pack rules that carry it out")
        return self


class NeverClaimHumanDuty(_Duty):
    kind: Literal["never_claim_human"] = "never_claim_human"


class MarkingDuty(_Duty):
    """Generated replies carry a machine-readable "AI-generated" marker outside the text."""

    kind: Literal["marking"] = "marking"


class ReportDuty(_Duty):
    """A periodic report of non-identifying figures."""

    kind: Literal["report"] = "report"
    figures: tuple[ReportFigure, ...] = Field(min_length=1)
    period: Literal["annual"] = "annual"
    first_due: date | None = None
    recipient: str = Field(min_length=1, max_length=200)


Duty = Annotated[
    DisclosureDuty
    | ReminderDuty
    | CrisisDuty
    | ContentBanDuty
    | NeverClaimHumanDuty
    | MarkingDuty
    | ReportDuty,
    Field(discriminator="kind"),
]


class Jurisdiction(BaseModel):
    """One law: its code, name, citation, when it binds, and its duties."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Annotated[str, Field(pattern=CODE_PATTERN, max_length=64)]
    name: str = Field(min_length=1, max_length=200)
    citation: str = Field(min_length=1, max_length=200)
    in_force: date
    duties: tuple[Duty, ...] = Field(min_length=1)


def parse_jurisdiction(data: Any, *, source: str) -> Jurisdiction:
    """Validate one jurisdiction document; PolicyError names ``source``, the field and the fix."""
    if not isinstance(data, dict):
        raise PolicyError(
            "the top level must be a mapping (code, name, citation, in_force, duties)",
            source=source,
        )
    try:
        return Jurisdiction.model_validate(data)
    except ValidationError as exc:
        raise config_error(
            exc,
            source=source,
            model=Jurisdiction,
            see="docs/compliance.md",
            hints={
                "union_tag_invalid": "unknown duty kind; use one of disclosure, reminder, "
                "crisis_protocol, content_ban, never_claim_human, marking, report"
            },
            error=PolicyError,
        ) from None


@cache
def jurisdiction(code: str) -> Jurisdiction:
    """The shipped jurisdiction ``code``; PolicyError for an unknown code or a broken file."""
    if code not in known_codes():
        raise PolicyError(
            f"unknown jurisdiction {code!r}; known: {list(known_codes())} (a new law is a new "
            "file in persona_mw/compliance/jurisdictions/, see docs/compliance.md)",
            source="jurisdictions",
            field="jurisdictions",
        )
    source = f"persona_mw/compliance/jurisdictions/{code}.yaml"
    text = resources.files(__package__).joinpath("jurisdictions", f"{code}.yaml").read_text("utf-8")
    law = parse_jurisdiction(yaml.safe_load(text), source=source)
    if law.code != code:
        raise PolicyError(
            f"the file's code {law.code!r} differs from its name; rename the file or the code",
            source=source,
            field="code",
        )
    return law
