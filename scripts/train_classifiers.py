"""Train the built-in text classifiers (persona_mw/bounds/models/<model>.json) from our data.

    .venv/bin/python scripts/train_classifiers.py            # write the models
    .venv/bin/python scripts/train_classifiers.py --check    # retrain, compare with the files
    .venv/bin/python scripts/train_classifiers.py --cv crisis-output  # reply models: 5-fold CV
    .venv/bin/python scripts/train_classifiers.py --thresholds crisis  # choose a threshold

What it learns from: the rows of ``tests/data/detection/<pack>.jsonl`` (see the README there) of
every split but the unseen ones (``holdout13``, ``holdout14`` and ``holdout15``), kept out so
that batches written by other hands stay unseen by the models and tell how they do on wording
nobody trained on. The batches by other hands that were unseen before (``holdout2`` to
``holdout12``) are trained on: each was measured unseen first (the figures are in
docs/benchmarks.md), and a batch by another hand teaches the models more wording than any amount
of one hand's rows. A message model (``crisis``, ``minor-safety``) learns from the input rows
and judges whole user messages; a sentence model (``crisis-output``, ``minor-safety-output``)
learns from the output rows — whole replies, plus each sentence of every negative reply, since
it judges a reply one sentence at a time. Each also learns the other pack's rows as negatives,
and a sentence model every ordinary input message (see ``rows``). The model is scikit-learn's
``TfidfVectorizer`` (``char_wb`` 2-5 and ``word`` 1-2, ``sublinear_tf``) and a
``LogisticRegression`` (``C=3``, balanced classes), both deterministic; scikit-learn is a test
dependency only: ``persona_mw.bounds.classifier`` scores the exported weights in plain Python.

The decision threshold of a message model is chosen by leaving each batch by another hand out
in turn (``--thresholds``): train on every other row, judge the batch as the rule does, and take
the lowest threshold, in steps of 0.05, at which no batch left out (of those with at least
:data:`MIN_NEGATIVES` negatives) passes :data:`FP_LIMITS` (5 % for crisis, which appends
resources, so a false positive costs a notice; 6 % for minor-safety, which blocks). A reply
model's replies are nearly all in ``dev``, so its threshold comes from five-fold
cross-validation over whole replies (``--cv``: a reply is flagged when any of its sentences
reaches the threshold): 0.5, where 5-7 % of other replies are flagged (the crisis model is in
force only after the user showed risk, where a false positive replaces a reply with the crisis
referral).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from persona_mw.bounds.classifier import (  # noqa: E402
    BUILTIN_MODELS,
    FORMAT,
    SENTENCE_CONTEXT,
    model_text,
)
from persona_mw.bounds.detectors import SentenceDetector  # noqa: E402

DATA = ROOT / "tests" / "data" / "detection"
MODELS = ROOT / "persona_mw" / "bounds" / "models"
#: Never trained on: the honest measure of wording the model has not seen.
UNSEEN = frozenset({"holdout13", "holdout14", "holdout15"})
#: The highest false-positive rate a message model may show on a batch it did not train on:
#: crisis appends resources (a false positive costs a notice), minor-safety blocks.
FP_LIMITS = {"crisis": 0.05, "minor-safety": 0.06}
#: A batch with fewer negatives than this tells too little about a false-positive rate.
MIN_NEGATIVES = 40
#: model -> (the pack whose data it learns from, the decision threshold)
SPECS = {
    "crisis": ("crisis", 0.65),
    "minor-safety": ("minor-safety", 0.55),
    "crisis-output": ("crisis", 0.6),
    "minor-safety-output": ("minor-safety", 0.5),
}
THRESHOLDS = {model: threshold for model, (_, threshold) in SPECS.items()}
C = 3.0
#: The thresholds a message model's choice considers.
STEPS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
#: How a sentence model reads a reply: its sentences, each with the context before it.
_SENTENCES = SentenceDetector("sentence", None, threshold=1.0, context=SENTENCE_CONTEXT)
BLOCKS: tuple[tuple[str, tuple[int, int]], ...] = (("char_wb", (2, 5)), ("word", (1, 2)))


def _read(pack: str) -> list[dict[str, Any]]:
    lines = (DATA / f"{pack}.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def rows(model: str, *, splits: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """The training rows of ``model``: its pack's rows of its stage, and the other pack's rows
    of that stage as negatives (a message about suicide is not a sexual request, a grooming
    reply is not method content: one pack's model must not fire on the other's harm), every
    split but the unseen ones. A sentence model also learns every pack's ordinary input
    messages as negatives (a reply may echo the user: "ok, help me with maths then" read as
    grooming when it knew replies only), and each sentence of a negative reply is a row too."""
    pack = SPECS[model][0]
    stage = "input" if BUILTIN_MODELS[model] == "message" else "output"
    packs = sorted({p for p, _ in SPECS.values()})
    candidates = [
        row if other == pack else {**row, "label": 0} for other in packs for row in _read(other)
    ]
    out = []
    for row in candidates:
        if row["split"] in UNSEEN:
            continue
        if row["stage"] != stage and not (stage == "output" and not row["label"]):
            continue
        if splits is None or row["split"] in splits:
            out.append(row)
            if stage == "output" and not row["label"]:
                sentences = _SENTENCES.segments(row["text"])
                if len(sentences) > 1:
                    out += [{**row, "text": row["text"][a:b]} for a, b in sentences]
    return out


def fit(train: list[dict[str, Any]]) -> tuple[list[Any], Any]:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [model_text(r["text"]) for r in train]
    vectorizers = [
        TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, lowercase=False)
        for analyzer, ngrams in BLOCKS
    ]
    matrix = hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
    model = LogisticRegression(C=C, max_iter=5000, class_weight="balanced")
    model.fit(matrix, [r["label"] for r in train])
    return vectorizers, model


def export(
    model_name: str, vectorizers: list[Any], model: Any, train: list[dict[str, Any]]
) -> dict:
    coef = model.coef_[0]
    blocks = []
    offset = 0
    for (analyzer, ngrams), vectorizer in zip(BLOCKS, vectorizers, strict=True):
        idf = vectorizer.idf_
        features = {
            gram: [float(f"{idf[i]:.7g}"), float(f"{coef[offset + i]:.7g}")]
            for gram, i in sorted(vectorizer.vocabulary_.items())
        }
        offset += len(idf)
        blocks.append({"analyzer": analyzer, "ngram_range": list(ngrams), "features": features})
    digest = hashlib.sha256(
        "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in train).encode()
    ).hexdigest()
    import sklearn

    unit = BUILTIN_MODELS[model_name]
    return {
        "format": FORMAT,
        "name": model_name,
        "unit": unit,
        "threshold": THRESHOLDS[model_name],
        "intercept": float(f"{model.intercept_[0]:.7g}"),
        "trained": {
            "data": f"tests/data/detection/{SPECS[model_name][0]}.jsonl",
            "stage": "input" if unit == "message" else "output",
            "splits_left_out": sorted(UNSEEN),
            "rows": len(train),
            "positives": sum(r["label"] for r in train),
            "sha256": digest,
            "C": C,
            "scikit_learn": sklearn.__version__,
        },
        "blocks": blocks,
    }


def train(name: str) -> dict:
    data = rows(name)
    vectorizers, model = fit(data)
    return export(name, vectorizers, model, data)


def differences(name: str) -> list[str]:
    """What differs between the shipped model and one retrained from today's data."""
    shipped = json.loads((MODELS / f"{name}.json").read_text("utf-8"))
    fresh = train(name)
    problems = []
    if shipped["trained"]["sha256"] != fresh["trained"]["sha256"]:
        problems.append("the data changed since the model was trained")
    for old, new in zip(shipped["blocks"], fresh["blocks"], strict=True):
        if old["features"].keys() != new["features"].keys():
            problems.append(f"{old['analyzer']}: other features")
            continue
        worst = max(
            abs(a - b)
            for k in old["features"]
            for a, b in zip(old["features"][k], new["features"][k], strict=True)
        )
        if worst > 1e-3:
            problems.append(f"{old['analyzer']}: weights differ by up to {worst:.2g}")
    if abs(shipped["intercept"] - fresh["intercept"]) > 1e-3:
        problems.append("intercept differs")
    if shipped["threshold"] != fresh["threshold"]:
        problems.append("threshold differs")
    return problems


def leave_one_batch_out(name: str) -> dict[str, dict[float, tuple[float, float]]]:
    """Each batch by another hand (``holdout2`` ...) in turn: train on every other row, judge
    the batch's own rows as the rule does; recall and false-positive rate per threshold."""
    from persona_mw.bounds.classifier import TextClassifier

    pack = SPECS[name][0]
    stage = "input" if BUILTIN_MODELS[name] == "message" else "output"
    data = rows(name)
    batches = sorted({r["split"] for r in data if r["split"].startswith("holdout")})
    figures: dict[str, dict[float, tuple[float, float]]] = {}
    for batch in batches:
        test_rows = [r for r in _read(pack) if r["split"] == batch and r["stage"] == stage]
        negatives = sum(not r["label"] for r in test_rows)
        positives = len(test_rows) - negatives
        if negatives < MIN_NEGATIVES or not positives:
            continue
        train_rows = [r for r in data if r["split"] != batch]
        vectorizers, model = fit(train_rows)
        scorer = TextClassifier(export(name, vectorizers, model, train_rows), source=batch)
        scored = [(scorer.judge(r["text"]), r["label"]) for r in test_rows]
        figures[batch] = {
            t: (
                sum(s >= t for s, label in scored if label) / positives,
                sum(s >= t for s, label in scored if not label) / negatives,
            )
            for t in STEPS
        }
        print(
            f"{name} without {batch} ({positives} + {negatives}): "
            + " | ".join(f"{t}: {r:.2f} / {f:.2f}" for t, (r, f) in figures[batch].items()),
            flush=True,
        )
    return figures


def choose_threshold(name: str) -> float:
    """The lowest threshold (in steps of 0.05) at which no batch left out passes the model's
    false-positive limit (:data:`FP_LIMITS`)."""
    figures = leave_one_batch_out(name)
    limit = FP_LIMITS[SPECS[name][0]]
    for t in STEPS:
        worst = max(f[t][1] for f in figures.values())
        recall = sum(f[t][0] for f in figures.values()) / len(figures)
        if worst <= limit:
            print(f"{name}: {t} (mean recall {recall:.3f}, worst FP {worst:.3f} <= {limit})")
            return t
    raise SystemExit(f"{name}: no threshold keeps every batch under {limit} false positives")


def cross_validate(name: str, folds: int = 5) -> None:
    """Reply models: train on four fifths of the rows, judge the other fifth's whole replies
    sentence by sentence with each sentence's context, as the rule does; recall and
    false-positive rate per threshold."""
    import random

    from persona_mw.bounds.classifier import TextClassifier

    pack = SPECS[name][0]
    data = rows(name)
    replies = [r for r in _read(pack) if r["stage"] == "output" and r["split"] not in UNSEEN]
    rng = random.Random(1)
    fold: dict[str, int] = {}
    for row in replies + data:  # a reply and its sentences fall in the reply's fold
        fold.setdefault(row["text"][:40], rng.randrange(folds))
    thresholds = (0.4, 0.5, 0.6, 0.7)
    counts = {t: [0, 0, 0, 0] for t in thresholds}  # tp, positives, fp, negatives
    for k in range(folds):
        train_rows = [r for r in data if fold[r["text"][:40]] != k]
        vectorizers, model = fit(train_rows)
        scorer = TextClassifier(export(name, vectorizers, model, train_rows), source="cv")
        for row in (r for r in replies if fold[r["text"][:40]] == k):
            text = row["text"]
            windows = _SENTENCES.judged(text)
            best = max((scorer.judge(text[r:b]) for r, _, b in windows), default=0.0)
            for t in thresholds:
                counts[t][0 if row["label"] else 2] += best >= t
                counts[t][1 if row["label"] else 3] += 1
    for t, (tp, pos, fp, neg) in counts.items():
        print(
            f"{name} {folds}-fold, replies: {t}: recall {tp / max(pos, 1):.2f} "
            f"FP {fp / max(neg, 1):.3f} ({pos} positive, {neg} negative replies)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="retrain and compare, write nothing")
    parser.add_argument("--cv", action="store_true", help="reply models: 5-fold CV on replies")
    parser.add_argument(
        "--thresholds",
        action="store_true",
        help="message models: leave each batch by another hand out, choose the threshold",
    )
    parser.add_argument("models", nargs="*", default=list(SPECS), help=f"of {list(SPECS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(SPECS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; the models are {list(SPECS)}")
    failed = False
    for name in args.models:
        if args.cv:
            cross_validate(name)
        elif args.thresholds:
            if BUILTIN_MODELS[name] != "message":
                parser.error(f"--thresholds is for message models; {name} judges sentences")
            choose_threshold(name)
        elif args.check:
            problems = differences(name)
            verdict = "; ".join(problems) if problems else "the shipped model is current"
            print(f"{name}: {verdict}")
            failed |= bool(problems)
        else:
            trained = train(name)
            MODELS.mkdir(exist_ok=True)
            path = MODELS / f"{name}.json"
            path.write_text(json.dumps(trained, ensure_ascii=False, separators=(",", ":")), "utf-8")
            print(
                f"{name}: {trained['trained']['rows']} rows -> {path.relative_to(ROOT)} "
                f"({path.stat().st_size / 1e6:.1f} MB)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
