"""Resolution: a deployment's :class:`Policy` + one user's :class:`Profile` -> the
:class:`EffectivePolicy` in force for that user.

``resolve`` is a pure function (memoised): tiers 1 and 2 come from the policy; tier 3 from the
profile can only narrow — its own blocked phrases and packs it switches on — except inside a
range the deployer declared user-adjustable, and only when the user is eligible. Every rule in
force carries its reason, and every rule left out says why, so ``persona-mw policy explain``
can show the whole composition.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from ..compliance import Compliance, compliance_for, jurisdiction
from ..profile import Profile
from ..types import Instruction
from .packs import PACKS, USER_PACKS, check_law_rules, pack_rules
from .policy import (
    USER_BLOCK_PHRASES,
    AIDisclosure,
    JudgeSpec,
    ModerationSpec,
    PhrasesSpec,
    Policy,
    RelationshipSpec,
    Rule,
)
from .scan import RuleInForce, Scanner

__all__ = ["EffectivePolicy", "resolve"]

_TIER_REASON = {
    1: "tier 1: law (immutable)",
    2: "tier 2: deployer policy",
    3: "tier 3: the user's own bound",
}


@dataclass(frozen=True, slots=True, weakref_slot=True)
class EffectivePolicy:
    """The bounds in force for one user. Immutable; compiled scanners included."""

    policy_version: str
    rules: tuple[RuleInForce, ...]
    #: Rules of the policy not in force for this user, with the reason: (rule id, why).
    not_in_force: tuple[tuple[str, str], ...]
    #: The not-human notice the ladder stage shows when due; None when it does not apply.
    ai_disclosure: AIDisclosure | None
    #: Instructions always in force for this user (instruction-only rules), tier order.
    instructions: tuple[Instruction, ...]
    input: Scanner = field(repr=False)
    output: Scanner = field(repr=False)
    #: Input rules whose detector calls a model (moderation, judge): run beside the model call.
    input_classifiers: tuple[RuleInForce, ...] = ()
    #: Output rules whose detector calls a model: run on the reply (streams: in windows).
    output_classifiers: tuple[RuleInForce, ...] = ()
    #: What the laws that apply to this user require (schedule, crisis behaviour, marking).
    compliance: Compliance = field(default_factory=Compliance)
    #: Output rules in force only in a call whose input fired one of their ``after_input``
    #: rules (in neither ``output`` nor ``output_classifiers``).
    after_input: tuple[RuleInForce, ...] = ()
    scorer: Callable[[str], float] | None = field(default=None, repr=False, compare=False)
    _after_scanners: dict[frozenset[str], Scanner] = field(
        default_factory=dict, repr=False, compare=False
    )

    def output_after(self, fired: Collection[str]) -> tuple[Scanner, tuple[RuleInForce, ...]]:
        """The output scanner and model-backed output rules for a call whose input fired the
        rules ``fired`` (ids): the unconditional ones plus each ``after_input`` rule one of
        whose triggers is among them. Scanners are compiled once per set of such rules."""
        waiting = [r for r in self.after_input if not set(r.rule.after_input).isdisjoint(fired)]
        if not waiting:
            return self.output, self.output_classifiers
        classified = tuple(r for r in waiting if _classified(r.rule))
        scanned = [r for r in waiting if not _classified(r.rule)]
        key = frozenset(r.rule.id for r in scanned)
        scanner = self._after_scanners.get(key) if scanned else self.output
        if scanner is None:
            scanner = Scanner([*self.output.rules, *scanned], scorer=self.scorer)
            self._after_scanners[key] = scanner
        return scanner, self.output_classifiers + classified

    def explain(self) -> dict[str, Any]:
        """The composition as plain data (the CLI prints it as JSON)."""
        return {
            "policy_version": self.policy_version,
            "rules": [
                {
                    "id": r.rule.id,
                    "tier": r.rule.tier,
                    "stage": r.rule.stage,
                    "detector": r.rule.detector.kind if r.rule.detector else None,
                    "action": r.rule.action if r.rule.detector else "instruct",
                    "reason": r.reason,
                }
                for r in self.rules
            ],
            "not_in_force": [{"id": rule_id, "reason": why} for rule_id, why in self.not_in_force],
            "ai_disclosure": self.ai_disclosure.model_dump() if self.ai_disclosure else None,
            "instructions": [
                {"tier": i.tier, "source": i.source, "text": i.text} for i in self.instructions
            ],
            "jurisdictions": list(self.compliance.laws),
            "duties": self.compliance.explain(),
        }


def _classified(rule: Rule) -> bool:
    """Whether the rule's detector calls a model (moderation, judge): run beside the call."""
    return isinstance(rule.detector, JudgeSpec | ModerationSpec)


def _is_adult(profile: Profile) -> bool:
    return profile.age_band == "18_plus" and not profile.known_minor


def _audience_ok(rule: Rule, *, minor: bool, adult: bool) -> str | None:
    """None when the rule's audience includes the user, else why not."""
    if rule.audience == "minors" and not minor:
        return "for known minors only; the user is not a known minor"
    if rule.audience == "adults" and not adult:
        return "for verified adults only (age band 18_plus)"
    return None


def resolve(
    policy: Policy,
    profile: Profile,
    *,
    scorer: Callable[[str], float] | None = None,
    jurisdictions: Iterable[str] = (),
    misleading_context: bool = False,
) -> EffectivePolicy:
    """The effective policy for ``profile`` under ``policy``. Pure and memoised on the policy and
    the profile fields that matter (age, bounds, adjustable choices, laws), so users with the
    same settings share one compiled result; ``scorer`` replaces the relationship scorer (tests).

    The laws in force are ``jurisdictions`` (the deployment's and the request's) plus the
    profile's own: every pack rule a law requires is in force at tier 1 (added when the policy
    lacks it, raised to tier 1 and out of the user's reach when the policy has it at tier 2)."""
    laws = tuple(sorted({*jurisdictions, *profile.jurisdictions}))
    return _resolve(
        policy,
        profile.known_minor,
        _is_adult(profile),
        tuple(profile.bounds.block_phrases),
        tuple(profile.bounds.enable_packs),
        tuple(sorted(profile.adjustable.items())),
        scorer,
        laws,
        misleading_context,
    )


@cache
def _check_law(code: str) -> None:
    check_law_rules(jurisdiction(code), source=f"persona_mw/compliance/jurisdictions/{code}.yaml")


def _law_rules(policy: Policy, compliance: Compliance) -> tuple[Rule, ...]:
    """The policy's rules, with the pack rules the laws require added (those it lacks)."""
    present = {rule.id for rule in policy.rules}
    required = {rule_id for rule_id, _ in compliance.rules} - present
    if not required:
        return policy.rules
    extra = [rule for name in PACKS for rule in pack_rules(name) if rule.id in required]
    return (*policy.rules, *extra)


#: Effective policies kept: one per distinct (policy, user choices) — a user with block phrases
#: of their own has one of their own (~0.2 MB: their small phrase index; the policy's phrases
#: and detectors are shared), and a miss costs ~2 ms.
@lru_cache(maxsize=1024)
def _resolve(
    policy: Policy,
    minor: bool,
    adult: bool,
    block_phrases: tuple[str, ...],
    enable_packs: tuple[str, ...],
    adjustable: tuple[tuple[str, bool | int | str], ...],
    scorer: Callable[[str], float] | None,
    laws: tuple[str, ...] = (),
    misleading: bool = False,
) -> EffectivePolicy:
    for code in laws:
        _check_law(code)
    compliance = compliance_for(laws, minor=minor, misleading_context=misleading)
    choices = dict(adjustable)
    user_packs = set(enable_packs)
    in_force: list[RuleInForce] = []
    left_out: list[tuple[str, str]] = []

    for rule in _law_rules(policy, compliance):
        why_not = _audience_ok(rule, minor=minor, adult=adult)
        if why_not:
            left_out.append((rule.id, why_not))
            continue
        required = compliance.rule_laws(rule.id)
        if required is not None:
            rule = rule.model_copy(update={"tier": 1, "adjustable": None})
        reason = _TIER_REASON[rule.tier]
        if required is not None:
            reason += f"; required by {', '.join(required.laws)}"
        if rule.audience == "minors":
            reason += "; the user is a known minor"
        if rule.after_input:
            reason += f"; on replies only after input rule {' or '.join(rule.after_input)} fired"
        adj = rule.adjustable
        option = (adj.option or rule.id) if adj else None
        if adj is not None and option in choices:
            choice = choices[option]
            eligible = adj.eligibility == "all" or adult
            pack_name = rule.id.split(".")[0]
            if not eligible:
                reason += f"; user asked for {option}={choice!r}, but the option is for adults only"
            elif pack_name in user_packs:
                reason += f"; user asked for {option}={choice!r}, but also switched the pack on"
            elif isinstance(choice, str) and choice in adj.values:
                allowed = (
                    "allowed for adults"
                    if adj.eligibility == "adults_only"
                    else "allowed for all users"
                )
                if choice == "off":
                    left_out.append((rule.id, f"user opted out ({option}=off); {allowed}"))
                    continue
                rule = rule.model_copy(update={"action": choice})
                reason += f"; user chose {option}={choice}; {allowed}"
            elif (
                adj.range is not None
                and isinstance(choice, int | float)
                and not isinstance(choice, bool)
                and adj.range[0] <= choice <= adj.range[1]
                and isinstance(rule.detector, RelationshipSpec)
            ):
                # Profiles hold integers: a threshold is chosen in percent.
                detector = rule.detector.model_copy(update={"threshold": choice / 100})
                rule = rule.model_copy(update={"detector": detector})
                low, high = adj.range
                reason += f"; user set {option}={choice} (allowed range {low:g}-{high:g})"
            else:
                reason += f"; user's {option}={choice!r} is outside the allowed choices, ignored"
        in_force.append(RuleInForce(rule, reason))

    enabled_here = {r.rule.id for r in in_force}
    for rule in policy.user_packs:
        pack = rule.id.split(".")[0]
        if pack in user_packs and rule.id not in enabled_here:
            in_force.append(RuleInForce(rule, f"tier 3: the user switched on the {pack!r} pack"))
    for name in sorted(user_packs - set(USER_PACKS)):
        left_out.append((f"pack:{name}", f"users may switch on only {list(USER_PACKS)}"))
    # A user's phrases are literal: braces and "..." are the deployer's family and gap syntax,
    # not theirs (and, not being letters, a match ignores them anyway).
    literal = tuple(
        phrase
        for phrase in (
            " ".join(p.replace("{", " ").replace("}", " ").replace("...", " ").split())
            for p in block_phrases
        )
        if phrase
    )
    if literal:
        in_force.append(
            RuleInForce(
                Rule(
                    id=USER_BLOCK_PHRASES,
                    tier=3,
                    stage="output",
                    detector=PhrasesSpec(phrases=literal),
                    action="block",
                    message="This answer contained something you asked never to be shown "
                    "(your own bounds). Try asking in another way.",
                ),
                "tier 3: phrases the user asked never to see",
            )
        )

    disclosure = policy.ai_disclosure
    if disclosure is not None and disclosure.audience == "minors" and not minor:
        left_out.append(("ai-disclosure", "notice for known minors only (deployer's setting)"))
        disclosure = None

    instructions = tuple(
        Instruction(tier=r.rule.tier, source=r.rule.id, text=r.rule.instruction)
        for r in sorted(in_force, key=lambda r: r.rule.tier)
        if r.rule.detector is None and r.rule.instruction
    )
    detecting = [r for r in in_force if r.rule.detector is not None and not r.rule.after_input]
    classified = [r for r in detecting if _classified(r.rule)]
    scanned = [r for r in detecting if r not in classified]
    return EffectivePolicy(
        policy_version=policy.version,
        rules=tuple(in_force),
        not_in_force=tuple(left_out),
        ai_disclosure=disclosure,
        instructions=instructions,
        input=Scanner(
            [r for r in scanned if r.rule.applies_to("input")],
            scorer=scorer,
        ),
        output=Scanner([r for r in scanned if r.rule.applies_to("output")], scorer=scorer),
        input_classifiers=tuple(r for r in classified if r.rule.applies_to("input")),
        output_classifiers=tuple(r for r in classified if r.rule.applies_to("output")),
        compliance=compliance,
        after_input=tuple(r for r in in_force if r.rule.after_input),
        scorer=scorer,
    )
