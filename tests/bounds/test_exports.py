"""Pin the public names of persona_mw.bounds: adding one is a decision, removing one breaks
callers."""

import persona_mw.bounds

EXPECTED = {
    "AIDisclosure",
    "Adjustable",
    "BASELINE_POLICY",
    "BoundsConfig",
    "BoundsInputStage",
    "BoundsOutputStage",
    "Detector",
    "EffectivePolicy",
    "Folded",
    "Hit",
    "InputVerdict",
    "Override",
    "PACKS",
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
    "USER_PACKS",
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
}


def test_public_names() -> None:
    assert set(persona_mw.bounds.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(persona_mw.bounds, name) is not None


def test_detectors_follow_the_protocol() -> None:
    from persona_mw.bounds import (
        Detector,
        PhraseDetector,
        PIIDetector,
        RegexDetector,
        RelationshipDetector,
    )

    for detector in (
        PhraseDetector(["x"]),
        PIIDetector(),
        RegexDetector("x"),
        RelationshipDetector(),
    ):
        assert isinstance(detector, Detector)
