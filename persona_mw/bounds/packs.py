"""Built-in rule packs: YAML files shipped in ``persona_mw/bounds/packs/`` (package data).

A deployer switches a pack on in a policy file (``packs: [crisis, {name: pii, action: block}]``).
Options may configure a pack but never loosen one of its tier-1 rules: a different action, stage
or audience, a later disclosure interval, or a lower tier fails the load with a PolicyError.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from ..compliance.law import Jurisdiction
from ..errors import PolicyError
from ..validation import config_error
from .policy import AIDisclosure, BuiltinPack, PackRef, PhrasesSpec, PIISpec, Rule, _Frozen

__all__ = ["PACKS", "USER_PACKS", "check_law_rules", "expand_pack", "pack_rules", "user_pack_rules"]

#: Every built-in pack, in the order of :data:`~persona_mw.bounds.policy.BuiltinPack`.
PACKS: tuple[BuiltinPack, ...] = get_args(BuiltinPack)
#: Packs a user may switch on for themselves (``profile.bounds.enable_packs``); they narrow.
USER_PACKS = ("profanity", "pii")

#: Which options each pack accepts (beyond ``name``).
_OPTIONS: dict[str, frozenset[str]] = {
    "pii": frozenset({"tier", "action", "stage", "message", "kinds", "region"}),
    "crisis": frozenset({"message"}),
    "ai-disclosure": frozenset({"audience", "interval_hours", "text"}),
    "minor-safety": frozenset({"message"}),
    "profanity": frozenset(
        {"tier", "action", "stage", "message", "audience", "adjustable", "extra_phrases"}
    ),
}
_OPTIONS.update({f"profanity-{lang}": _OPTIONS["profanity"] for lang in ("es", "fr", "de", "pt")})


class _PackFile(_Frozen):
    rules: tuple[Rule, ...] = ()
    disclosure: AIDisclosure | None = None


@cache
def _load(name: str) -> _PackFile:
    text = resources.files(__package__).joinpath("packs", f"{name}.yaml").read_text("utf-8")
    try:
        return _PackFile.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # a broken built-in pack is our bug: say where
        raise config_error(
            exc, source=f"persona_mw/bounds/packs/{name}.yaml", model=_PackFile, error=PolicyError
        ) from None


def pack_rules(name: str) -> tuple[Rule, ...]:
    """The rules of a built-in pack as shipped, before any options."""
    return _load(name).rules


@cache
def _rule_ids() -> frozenset[str]:
    return frozenset(rule.id for name in PACKS for rule in pack_rules(name))


def check_law_rules(law: Jurisdiction, *, source: str) -> None:
    """Every rule a law names (to carry a duty out) must be a built-in pack rule. The laws are
    read without the packs, which build on them, so the bounds check the tie when they apply a
    law; PolicyError names ``source``, the duty's field and the fix."""
    known = _rule_ids()
    for i, duty in enumerate(law.duties):
        unknown = [rule_id for rule_id in duty.rules if rule_id not in known]
        if unknown:
            raise PolicyError(
                f"unknown rule id(s) {unknown}; use the ids of the built-in packs "
                f"(persona_mw/bounds/packs/*.yaml), e.g. {sorted(known)[:3]}",
                source=source,
                field=f"duties.{i}.{duty.kind}.rules",
            )


def expand_pack(ref: PackRef, *, source: str) -> tuple[tuple[Rule, ...], AIDisclosure | None]:
    """The rules (and disclosure declaration) a pack entry switches on, with its options."""
    pack = _load(ref.name)
    given = {k for k, v in ref.model_dump(exclude={"name"}).items() if v not in (None, ())}
    refused = given - _OPTIONS[ref.name]
    if refused:
        raise PolicyError(
            f"pack {ref.name!r} does not take the option(s) {sorted(refused)}; it takes "
            f"{sorted(_OPTIONS[ref.name]) or 'none'}",
            source=source,
            field="packs",
        )

    def loosen(rule: Rule, what: str) -> PolicyError:
        return PolicyError(
            f"pack {ref.name!r}: {what} would loosen a tier-1 rule; tier-1 rules are immutable",
            source=source,
            rule_id=rule.id,
        )

    rules = []
    for rule in pack.rules:
        update: dict[str, Any] = {}
        if ref.tier is not None and ref.tier != rule.tier:
            if rule.tier == 1:
                raise loosen(rule, f"tier {ref.tier}")
            update["tier"] = ref.tier
            if ref.tier == 1:
                update["adjustable"] = None
        if ref.action is not None and rule.detector is not None:
            update["action"] = ref.action
        if ref.stage is not None:
            update["stage"] = ref.stage
        if ref.message is not None and rule.detector is not None:
            update["message"] = ref.message
        if ref.audience is not None and ref.name.startswith("profanity"):
            update["audience"] = ref.audience
        if ref.adjustable is not None:
            update["adjustable"] = None if ref.adjustable is False else ref.adjustable
        if (ref.kinds is not None or ref.region is not None) and isinstance(rule.detector, PIISpec):
            update["detector"] = {
                "kind": "pii",
                "kinds": list(ref.kinds if ref.kinds is not None else rule.detector.kinds),
                "region": ref.region or rule.detector.region,
            }
        if ref.extra_phrases and isinstance(rule.detector, PhrasesSpec):
            update["detector"] = {
                "kind": "phrases",
                "phrases": [*rule.detector.phrases, *ref.extra_phrases],
                "unless": list(rule.detector.unless),
                "stems": list(rule.detector.stems),
            }
        try:
            rules.append(Rule.model_validate({**rule.model_dump(), **update}) if update else rule)
        except ValidationError as exc:
            raise config_error(exc, source=source, error=PolicyError, rule_id=rule.id) from None

    disclosure = pack.disclosure
    if disclosure is not None:
        if ref.interval_hours is not None and ref.interval_hours > disclosure.interval_hours:
            raise PolicyError(
                f"pack 'ai-disclosure': interval_hours {ref.interval_hours} would loosen a tier-1 "
                f"rule (the law requires a reminder at least every {disclosure.interval_hours:g} "
                "hours); use a value <= 3",
                source=source,
                field="packs",
                rule_id="ai-disclosure",
            )
        if ref.audience == "adults":
            raise PolicyError(
                "pack 'ai-disclosure': audience must be 'all' or 'minors'",
                source=source,
                field="packs",
                rule_id="ai-disclosure",
            )
        disclosure = AIDisclosure.model_validate(
            disclosure.model_dump()
            | {
                k: v
                for k, v in (
                    ("audience", ref.audience),
                    ("interval_hours", ref.interval_hours),
                    ("text", ref.text),
                )
                if v is not None
            }
        )
    return tuple(rules), disclosure


def user_pack_rules(*, exclude: set[str]) -> tuple[Rule, ...]:
    """Tier-3 versions of the packs a user may switch on, minus those the deployer runs."""
    out = []
    for name in USER_PACKS:
        if name in exclude:
            continue
        for rule in _load(name).rules:
            out.append(rule.model_copy(update={"tier": 3, "adjustable": None}))
    return tuple(out)
