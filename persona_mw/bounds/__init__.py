"""Tiered bounds: tier 1 (law, immutable), tier 2 (deployer), tier 3 (user, narrows only).

    from persona_mw.bounds import BoundsConfig, bounds_stages
    check_input, check_output = bounds_stages(BoundsConfig(policies=("policy.yaml",)))
    mw = Middleware(input_stages=[check_input, ...], output_stages=[check_output])

A :class:`Policy` is loaded once from YAML files (:func:`load_policy`, format in
docs/policies.md) and never changes; :func:`resolve` composes it with a user's profile into the
:class:`EffectivePolicy` in force for that user, every rule with its tier and reason.
"""

from .detectors import (
    Detector,
    PhraseDetector,
    PhraseIndex,
    RegexDetector,
    RelationshipDetector,
)
from .loading import load_policy, policy_from_dict
from .normalise import Folded, fold
from .packs import PACKS, USER_PACKS
from .pii import PIIDetector, iban_valid, luhn_valid
from .policy import (
    Adjustable,
    AIDisclosure,
    Override,
    PackRef,
    Policy,
    Rule,
)
from .resolve import EffectivePolicy, resolve
from .scan import Hit, RuleInForce, Scanner, StreamFilter, apply_redactions, decisions_for
from .stages import (
    BASELINE_POLICY,
    BoundsConfig,
    BoundsInputStage,
    BoundsOutputStage,
    InputVerdict,
    bounds_stages,
    check_input,
    input_verdict,
)

__all__ = [
    "BASELINE_POLICY",
    "PACKS",
    "USER_PACKS",
    "AIDisclosure",
    "Adjustable",
    "BoundsConfig",
    "BoundsInputStage",
    "BoundsOutputStage",
    "Detector",
    "EffectivePolicy",
    "Folded",
    "Hit",
    "InputVerdict",
    "Override",
    "PIIDetector",
    "PackRef",
    "PhraseDetector",
    "PhraseIndex",
    "Policy",
    "RegexDetector",
    "RelationshipDetector",
    "Rule",
    "RuleInForce",
    "Scanner",
    "StreamFilter",
    "apply_redactions",
    "bounds_stages",
    "check_input",
    "decisions_for",
    "fold",
    "iban_valid",
    "input_verdict",
    "load_policy",
    "luhn_valid",
    "policy_from_dict",
    "resolve",
]
