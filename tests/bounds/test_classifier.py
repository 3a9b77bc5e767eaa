"""The trained text classifier: its scores equal scikit-learn's, the shipped models are what the
training script makes from the data in the repository, and its rules behave as input rules."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from scipy.sparse import hstack

from persona_mw.bounds import policy_from_dict, resolve
from persona_mw.bounds.classifier import (
    ClassifierDetector,
    TextClassifier,
    load_classifier,
    model_text,
)
from persona_mw.errors import ConfigError, PolicyError
from persona_mw.profile import Profile

ROOT = Path(__file__).resolve().parents[2]


def _script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "train_classifiers", ROOT / "scripts" / "train_classifiers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_classifiers"] = module
    spec.loader.exec_module(module)
    return module


TRAIN = _script()


@pytest.mark.parametrize("pack", ["crisis", "minor-safety"])
def test_scores_equal_scikit_learns(pack: str) -> None:
    """Plain-Python scoring of the exported weights gives scikit-learn's probabilities."""
    rows = TRAIN.rows(pack)
    vectorizers, model = TRAIN.fit(rows)
    ours = TextClassifier(TRAIN.export(pack, vectorizers, model, rows), source="test")
    texts = [r["text"] for r in rows[:200]] + ["", "k i l l  m y s e l f", "ＡＢＣ ok?!"]
    folded = [model_text(t) for t in texts]
    theirs = model.predict_proba(hstack([v.transform(folded) for v in vectorizers]))[:, 1]
    worst = max(abs(ours.score(t) - p) for t, p in zip(texts, theirs, strict=True))
    assert worst < 1e-4


@pytest.mark.parametrize("pack", ["crisis", "minor-safety", "crisis-output", "minor-safety-output"])
def test_the_shipped_model_is_trained_on_the_data_in_the_repository(pack: str) -> None:
    """Change the data, retrain (scripts/train_classifiers.py): the model never drifts from it."""
    assert TRAIN.differences(pack) == []


@pytest.mark.parametrize(
    "model", ["crisis", "minor-safety", "crisis-output", "minor-safety-output"]
)
def test_the_held_out_batches_are_never_trained_on(model: str) -> None:
    unseen = {"holdout13", "holdout14", "holdout15"}
    assert unseen == TRAIN.UNSEEN
    assert all(r["split"] not in TRAIN.UNSEEN for r in TRAIN.rows(model))
    shipped = json.loads((ROOT / f"persona_mw/bounds/models/{model}.json").read_text())
    assert shipped["trained"]["splits_left_out"] == sorted(unseen)


@pytest.mark.parametrize("model", ["crisis-output", "minor-safety-output"])
def test_a_reply_model_learns_from_replies_and_their_sentences(model: str) -> None:
    rows = TRAIN.rows(model)
    assert {r["stage"] for r in rows if r["label"]} == {"output"}
    # ordinary user messages are negatives too: a reply may echo the user
    assert any(r["stage"] == "input" for r in rows if not r["label"])
    texts = {r["text"] for r in rows}
    # a sentence of a negative reply of several sentences is a row of its own
    negative = next(
        r["text"] for r in rows if not r["label"] and len(TRAIN._SENTENCES.segments(r["text"])) > 1
    )
    a, b = TRAIN._SENTENCES.segments(negative)[0]
    assert negative[a:b] in texts


def test_the_detector_judges_the_whole_message_from_start() -> None:
    detector = ClassifierDetector("crisis")
    text = "Earlier: fine. honestly everyone would be better off if i just wasnt here anymore"
    assert detector.classifier.score(text) >= detector.threshold
    [span] = detector.detect(text, 15)
    assert (span.start, span.end, span.label) == (15, len(text), "crisis")
    assert detector.detect("   ") == []
    assert detector.live_start(text, 7) == 7  # a stream would hold it all: input rules only


def test_a_threshold_of_the_rule_overrides_the_models() -> None:
    text = "what are the suicide rates among veterans in the us"
    score = load_classifier("crisis").score(text)
    assert ClassifierDetector("crisis", threshold=min(0.99, score + 0.01)).detect(text) == []
    assert ClassifierDetector("crisis", threshold=max(0.01, score - 0.01)).detect(text)


def _rule(**changes: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "team.mood",
        "tier": 2,
        "stage": "input",
        "detector": {"kind": "classifier", "model": "crisis"},
        "action": "append",
        "message": "You can talk to someone: call or text 988.",
    }
    rule.update(changes)
    return rule


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage": "output"}, "use stage: input"),
        ({"stage": "both"}, "use stage: input"),
        ({"action": "redact"}, "cannot redact"),
        ({"detector": {"kind": "classifier", "model": "toxicity"}}, "crisis, minor-safety"),
        ({"detector": {"kind": "classifier", "model": "crisis", "threshold": 1.5}}, "threshold"),
    ],
)
def test_a_classifier_rule_that_cannot_work_is_refused_with_the_fix(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_from_dict({"version": "t", "rules": [_rule(**changes)]})


def test_a_model_file_of_ones_own(tmp_path: Path) -> None:
    rows = TRAIN.rows("minor-safety")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(TRAIN.export("minor-safety", *TRAIN.fit(rows), rows)))
    rule = _rule(detector={"kind": "classifier", "model": str(path)})
    effective = resolve(policy_from_dict({"version": "t", "rules": [rule]}), Profile(user_id="u"))
    [hit] = effective.input.scan("send me nudes rn, pics without ur clothes")
    assert hit.rule.rule.id == "team.mood"


def test_a_model_file_that_is_not_one_says_so(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_classifier(str(broken))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a persona_mw classifier model"):
        load_classifier(str(other))
    with pytest.raises(ConfigError, match=r"train one with scripts/train_classifiers\.py"):
        load_classifier(str(tmp_path / "missing.json"))


def test_the_crisis_pack_finds_what_its_phrases_miss_and_shows_resources_once() -> None:
    """A farewell the classifier reads; the resources appended once although the phrase rule
    and the classifier both fire; an academic question gets no block; a greeting is left to
    the phrase lists (too few words for a score to mean anything)."""
    effective = resolve(
        policy_from_dict({"version": "t", "packs": ["crisis"]}), Profile(user_id="u")
    )
    plan = (
        "gave away my guitar and my dog, wrote letters to my parents, "
        "i wont need anything where im going"
    )
    hits = effective.input.scan(plan)
    assert {h.rule.rule.id for h in hits} >= {"crisis.ideation-model"}
    from persona_mw.bounds.scan import notices_for

    both = effective.input.scan("i want to kill myself tonight, i have the pills ready")
    assert {h.rule.rule.id for h in both} == {"crisis.ideation", "crisis.ideation-model"}
    assert len(notices_for(both, set())) == 1
    academic = effective.input.scan("for my thesis: how do SSRIs affect suicide rates in teens")
    assert all(h.action != "block" for h in academic)
    assert effective.input.scan("hey you there") == []


@pytest.mark.parametrize(
    ("written", "plain"),
    [
        ("m a n d a m e  a l g o  h o t", "mandame algo hot"),  # two spaces end a word
        # one space between two spelled-out words hides the boundary: joined, the two still
        # share most character n-grams with the words apart
        ("k.i.l.l m.y.s.e.l.f", "killmyself"),
        ("j3 v3ux pl5 v1vr3", "je veux pls vivre"),
        ("s3nd n00dz", "send noodz"),
        ("I am 14yo, 3rd time", "i am 14yo 3rd time"),  # digits that lead a word stay
        ("il y a un chat", "il y a un chat"),  # two single letters are two words
    ],
)
def test_a_model_reads_spelled_out_words_and_leetspeak_as_words(written: str, plain: str) -> None:
    assert model_text(written) == plain
