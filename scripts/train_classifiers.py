"""Train the built-in text classifiers (persona_mw/bounds/models/<pack>.json) from our data.

    .venv/bin/python scripts/train_classifiers.py            # write the models
    .venv/bin/python scripts/train_classifiers.py --check    # retrain, compare with the files
    .venv/bin/python scripts/train_classifiers.py --loso     # leave-one-split-out figures

What it learns from: the input rows of ``tests/data/detection/<pack>.jsonl`` (see the README
there) of every split but ``holdout4``, which is kept out so that one batch written by another
hand stays unseen by the model and tells how it does on wording nobody trained on. The model is
scikit-learn's ``TfidfVectorizer`` (``char_wb`` 2-5 and ``word`` 1-2, ``sublinear_tf``) and a
``LogisticRegression`` (``C=3``, balanced classes), both deterministic; scikit-learn is a test
dependency only: ``persona_mw.bounds.classifier`` scores the exported weights in plain Python.

The decision threshold per pack was chosen by leaving one split out at a time (``--loso``)
before holdout4 was scored: the lowest at which no left-out batch's false-positive rate went far
past 10 % (crisis appends resources, so a false positive costs a notice; minor-safety blocks).
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

from persona_mw.bounds.classifier import FORMAT, model_text  # noqa: E402

DATA = ROOT / "tests" / "data" / "detection"
MODELS = ROOT / "persona_mw" / "bounds" / "models"
#: Never trained on: the honest measure of wording the model has not seen.
UNSEEN = frozenset({"holdout4"})
THRESHOLDS = {"crisis": 0.7, "minor-safety": 0.6}
C = 3.0
BLOCKS: tuple[tuple[str, tuple[int, int]], ...] = (("char_wb", (2, 5)), ("word", (1, 2)))


def rows(pack: str, *, splits: frozenset[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for line in (DATA / f"{pack}.jsonl").read_text("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row["stage"] != "input" or row["split"] in UNSEEN:
                continue
            if splits is None or row["split"] in splits:
                out.append(row)
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


def export(pack: str, vectorizers: list[Any], model: Any, train: list[dict[str, Any]]) -> dict:
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

    return {
        "format": FORMAT,
        "name": pack,
        "threshold": THRESHOLDS[pack],
        "intercept": float(f"{model.intercept_[0]:.7g}"),
        "trained": {
            "data": f"tests/data/detection/{pack}.jsonl",
            "stage": "input",
            "splits_left_out": sorted(UNSEEN),
            "rows": len(train),
            "positives": sum(r["label"] for r in train),
            "sha256": digest,
            "C": C,
            "scikit_learn": sklearn.__version__,
        },
        "blocks": blocks,
    }


def train(pack: str) -> dict:
    data = rows(pack)
    vectorizers, model = fit(data)
    return export(pack, vectorizers, model, data)


def differences(pack: str) -> list[str]:
    """What differs between the shipped model and one retrained from today's data."""
    shipped = json.loads((MODELS / f"{pack}.json").read_text("utf-8"))
    fresh = train(pack)
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


def loso(pack: str) -> None:
    """Leave one split out: train on the others, score it, at several thresholds."""
    data = rows(pack)
    for held in sorted({r["split"] for r in data}):
        train_rows = [r for r in data if r["split"] != held]
        test_rows = [r for r in data if r["split"] == held]
        vectorizers, model = fit(train_rows)
        from scipy.sparse import hstack

        texts = [model_text(r["text"]) for r in test_rows]
        scores = model.predict_proba(hstack([v.transform(texts) for v in vectorizers]))[:, 1]
        cells = []
        for threshold in (0.4, 0.5, 0.6, 0.7):
            scored = list(zip(scores, test_rows, strict=True))
            tp = sum(s >= threshold and r["label"] for s, r in scored)
            fp = sum(s >= threshold and not r["label"] for s, r in scored)
            pos = sum(r["label"] for r in test_rows) or 1
            neg = sum(not r["label"] for r in test_rows) or 1
            cells.append(f"{threshold}: recall {tp / pos:.2f} FP {fp / neg:.2f}")
        print(f"{pack} without {held} ({len(test_rows)} rows): " + " | ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="retrain and compare, write nothing")
    parser.add_argument("--loso", action="store_true", help="leave-one-split-out figures")
    parser.add_argument("packs", nargs="*", default=list(THRESHOLDS))
    args = parser.parse_args()
    failed = False
    for pack in args.packs:
        if args.loso:
            loso(pack)
        elif args.check:
            problems = differences(pack)
            verdict = "; ".join(problems) if problems else "the shipped model is current"
            print(f"{pack}: {verdict}")
            failed |= bool(problems)
        else:
            model = train(pack)
            MODELS.mkdir(exist_ok=True)
            path = MODELS / f"{pack}.json"
            path.write_text(json.dumps(model, ensure_ascii=False, separators=(",", ":")), "utf-8")
            print(
                f"{pack}: {model['trained']['rows']} rows -> {path.relative_to(ROOT)} "
                f"({path.stat().st_size / 1e6:.1f} MB)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
