"""Dev-set figures and throughput for the relationship-seeking detector.

Run:  .venv/bin/python benchmarks/bench_relationship.py [--data DIR] [--repeats 5] [--families]

Reports, on the development set in ``/work/shared/data/relationship_seeking`` (see its README):
- Spearman correlation of ``relationship_score`` with the LLM-judge scores on graded_dev.jsonl,
  over all rows and per fold of a 5-fold split grouped by prompt (the calibration fit is two
  numbers — the logistic's offset and slope — which cannot change a rank correlation, so the CV
  figure only shows how stable the correlation is across prompts);
- pairwise accuracy on pairs_dev.jsonl (relationship-seeking reply scores higher than the neutral
  one; ties count one half), on all pairs, on the pairs whose neutral side never says "system",
  and with the neutral side's impersonal "This system ..." rewritten to "I ..." (a robustness
  check: a detector keying on that artefact would lose accuracy here);
- the calibration check: median score per judge score;
- throughput: texts/s and MB/s over all dev texts, median of ``--repeats`` runs.

Pure Python (no scipy / numpy): ranks with average ties, Pearson on the ranks.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from persona_mw.bounds.relationship import (
    CUE_FAMILIES,
    RelationshipScorer,
    relationship_score,
)

__all__ = ["neutralise_system", "pairwise_accuracy", "spearman"]

DEFAULT_DATA = Path("/work/shared/data/relationship_seeking")


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else 0.0


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties."""
    return _pearson(_ranks(x), _ranks(y))


def pairwise_accuracy(pos: Sequence[float], neg: Sequence[float]) -> float:
    """Share of pairs where ``pos`` scores above ``neg``; ties count one half."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in zip(pos, neg, strict=True))
    return wins / len(pos)


_VERB_FIX = {"is": "am", "was": "was", "does": "do", "has": "have", "can": "can", "will": "will"}
_SYSTEM = re.compile(r"\b(?:this|the)\s+system(?:'s)?(?:\s+(\w+))?", re.IGNORECASE)


def neutralise_system(text: str) -> str:
    """Rewrite the impersonal "This system suggests ..." register to "I suggest ..."."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0).lower().rstrip().endswith("'s") or "'s " in m.group(0).lower():
            return "my " + (m.group(1) or "")
        verb = m.group(1)
        if verb is None:
            return "me"
        low = verb.lower()
        if low in _VERB_FIX:
            return "I " + _VERB_FIX[low]
        if low.endswith("ies") and len(low) > 4:
            return "I " + verb[:-3] + "y"
        if low.endswith("es") and low[-3] in "shxz":
            return "I " + verb[:-2]
        if low.endswith("s") and not low.endswith("ss"):
            return "I " + verb[:-1]
        return "I " + verb

    out = _SYSTEM.sub(repl, text)
    return re.sub(r"(^|[.!?]\s+)(me|my)\b", lambda m: m.group(1) + m.group(2).capitalize(), out)


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _group_folds(rows: list[dict[str, Any]], k: int) -> list[list[int]]:
    """k folds of row indices, grouped so one prompt's responses stay in one fold."""
    keys = sorted({str(r.get("prompt_id", r.get("prompt"))) for r in rows})
    fold_of = {key: i % k for i, key in enumerate(keys)}
    folds: list[list[int]] = [[] for _ in range(k)]
    for i, r in enumerate(rows):
        folds[fold_of[str(r.get("prompt_id", r.get("prompt")))]].append(i)
    return folds


def _throughput(
    texts: list[str], score: Callable[[str], float], repeats: int
) -> tuple[float, float]:
    size = sum(len(t.encode("utf-8")) for t in texts)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for t in texts:
            score(t)
        rates.append(time.perf_counter() - t0)
    med = statistics.median(rates)
    return len(texts) / med, size / med / 1e6


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


#: The judge's scale is 0-10; a reply rated above its mid-point counts as relationship-seeking.
POSITIVE_FROM = 6.0


def _log_loss(raw: Sequence[float], label: Sequence[bool], off: float, sl: float) -> float:
    eps = 1e-9
    return -sum(
        math.log(max(eps, p if y else 1 - p))
        for p, y in ((_sigmoid((r - off) * sl), y) for r, y in zip(raw, label, strict=True))
    ) / len(raw)


def fit_calibration(raw: Sequence[float], label: Sequence[bool]) -> tuple[float, float]:
    """Offset and slope of the logistic P(judge >= 6 | raw), by maximum likelihood.

    Two parameters; a coarse-to-fine grid search is enough and needs no numerical library.
    """
    best = (float("inf"), 0.0, 1.0)
    off_lo, off_hi, sl_lo, sl_hi = -2.0, 4.0, 0.2, 4.0
    for _ in range(4):
        for i in range(31):
            off = off_lo + (off_hi - off_lo) * i / 30
            for j in range(31):
                sl = sl_lo + (sl_hi - sl_lo) * j / 30
                loss = _log_loss(raw, label, off, sl)
                if loss < best[0]:
                    best = (loss, off, sl)
        _, off, sl = best
        d_off, d_sl = (off_hi - off_lo) / 8, (sl_hi - sl_lo) / 8
        off_lo, off_hi, sl_lo, sl_hi = off - d_off, off + d_off, max(0.01, sl - d_sl), sl + d_sl
    return best[1], best[2]


def _calibration_report(graded: list[dict[str, Any]], folds: list[list[int]]) -> None:
    scorer = RelationshipScorer()
    raw = [scorer.explain(r["response"]).raw for r in graded]
    label = [float(r["score"]) >= POSITIVE_FROM for r in graded]
    off, sl = fit_calibration(raw, label)
    print(
        f"calibration on all rows (P(judge >= {POSITIVE_FROM:g})): offset={off:.3f} slope={sl:.3f}"
    )
    accs, briers = [], []
    for k, fold in enumerate(folds):
        held = set(fold)
        train = [i for i in range(len(raw)) if i not in held]
        o, s_ = fit_calibration([raw[i] for i in train], [label[i] for i in train])
        probs = [_sigmoid((raw[i] - o) * s_) for i in fold]
        acc = statistics.fmean((p >= 0.5) == label[i] for p, i in zip(probs, fold, strict=True))
        brier = statistics.fmean((p - label[i]) ** 2 for p, i in zip(probs, fold, strict=True))
        accs.append(acc)
        briers.append(brier)
        print(
            f"  fold {k}: offset={o:.3f} slope={s_:.3f} "
            f"held-out accuracy={acc:.3f} Brier={brier:.3f}"
        )
    base = statistics.fmean(label)
    print(
        f"  CV: accuracy at 0.5 = {statistics.fmean(accs):.3f}, "
        f"Brier = {statistics.fmean(briers):.3f} "
        f"(base rate {base:.3f}: constant predictor Brier {base * (1 - base):.3f}, "
        f"accuracy {max(base, 1 - base):.3f})"
    )


def _features(text: str, scorer: RelationshipScorer, names: list[str]) -> list[float]:
    why = scorer.explain(text)
    factor = math.sqrt(max(why.words, 60) / 60)
    counts = why.families()
    return [math.log1p(counts.get(n, 0) / factor) for n in names] + [
        math.log1p(text.count("!") / factor)
    ]


def _ridge(x: list[list[float]], y: list[float], lam: float) -> list[float]:
    """Ridge regression with an intercept (last weight), by Gaussian elimination."""
    rows = [[*r, 1.0] for r in x]
    d = len(rows[0])
    a = [
        [sum(r[i] * r[j] for r in rows) + (lam if i == j < d - 1 else 0.0) for j in range(d)]
        for i in range(d)
    ]
    b = [sum(r[i] * t for r, t in zip(rows, y, strict=True)) for i in range(d)]
    for c in range(d):
        piv = max(range(c, d), key=lambda k: abs(a[k][c]))
        a[c], a[piv], b[c], b[piv] = a[piv], a[c], b[piv], b[c]
        for k in range(d):
            if k != c and a[c][c]:
                f = a[k][c] / a[c][c]
                a[k] = [u - f * v for u, v in zip(a[k], a[c], strict=True)]
                b[k] -= f * b[c]
    return [b[i] / a[i][i] if a[i][i] else 0.0 for i in range(d)]


def _fit_compare(graded: list[dict[str, Any]], folds: list[list[int]]) -> None:
    """What fitting the family weights would buy, cross-validated (not what ships)."""
    scorer = RelationshipScorer()
    names = [f.name for f in CUE_FAMILIES] + ["emoji", "personal_question"]
    x = [_features(r["response"], scorer, names) for r in graded]
    y = [float(r["score"]) for r in graded]
    hand = [scorer.score(r["response"]) for r in graded]
    for lam in (1.0, 10.0, 50.0):
        pred = [0.0] * len(y)
        per_fold = []
        for fold in folds:
            held = set(fold)
            train = [i for i in range(len(y)) if i not in held]
            w = _ridge([x[i] for i in train], [y[i] for i in train], lam)
            for i in fold:
                pred[i] = sum(a * b for a, b in zip(w, [*x[i], 1.0], strict=True))
            per_fold.append(spearman([pred[i] for i in fold], [y[i] for i in fold]))
        print(
            f"ridge lambda={lam:g}: CV Spearman pooled={spearman(pred, y):.3f} "
            f"per-fold median={statistics.median(per_fold):.3f}"
        )
    hand_folds = [spearman([hand[i] for i in f], [y[i] for i in f]) for f in folds]
    print(
        f"hand-set weights (shipped): Spearman pooled={spearman(hand, y):.3f} "
        f"per-fold median={statistics.median(hand_folds):.3f}"
    )


def _family_table(graded: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> None:
    scorer = RelationshipScorer()
    judge = [float(r["score"]) for r in graded]
    g_counts = [scorer.explain(r["response"]).families() for r in graded]
    p_pos = [scorer.explain(r["relationship_seeking"]).families() for r in pairs]
    p_neg = [scorer.explain(neutralise_system(r["neutral"])).families() for r in pairs]
    names = [f.name for f in CUE_FAMILIES] + ["emoji", "personal_question"]
    print(f"{'family':34} {'rho(graded)':>11} {'fire hi':>8} {'fire lo':>8} {'rs':>6} {'neu':>6}")
    for name in names:
        cnt = [c.get(name, 0) for c in g_counts]
        hi = [c for c, j in zip(cnt, judge, strict=True) if j >= 6]
        lo = [c for c, j in zip(cnt, judge, strict=True) if j <= 3]
        print(
            f"{name:34} {spearman(cnt, judge):11.3f} {sum(map(bool, hi)) / len(hi):8.2f} "
            f"{sum(map(bool, lo)) / len(lo):8.2f} "
            f"{sum(1 for c in p_pos if c.get(name)) / len(pairs):6.2f} "
            f"{sum(1 for c in p_neg if c.get(name)) / len(pairs):6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--families", action="store_true", help="print a per-cue-family table")
    ap.add_argument("--calibrate", action="store_true", help="fit the logistic's offset and slope")
    ap.add_argument(
        "--fit-compare", action="store_true", help="CV figures of fitted family weights"
    )
    args = ap.parse_args(argv)

    graded = _load(args.data / "graded_dev.jsonl")
    pairs = _load(args.data / "pairs_dev.jsonl")
    if args.families:
        _family_table(graded, pairs)
        return 0
    if args.fit_compare:
        _fit_compare(graded, _group_folds(graded, args.folds))
        return 0
    if args.calibrate:
        _calibration_report(graded, _group_folds(graded, args.folds))
        return 0

    judge = [float(r["score"]) for r in graded]
    g_scores = [relationship_score(r["response"]) for r in graded]
    rho = spearman(g_scores, judge)
    fold_rhos = [
        spearman([g_scores[i] for i in fold], [judge[i] for i in fold])
        for fold in _group_folds(graded, args.folds)
    ]

    pos = [relationship_score(r["relationship_seeking"]) for r in pairs]
    neg = [relationship_score(r["neutral"]) for r in pairs]
    neg_i = [relationship_score(neutralise_system(r["neutral"])) for r in pairs]
    clean = [i for i, r in enumerate(pairs) if "system" not in r["neutral"].lower()]
    by_model: dict[str, list[int]] = {}
    for i, r in enumerate(pairs):
        by_model.setdefault(str(r.get("source_model")), []).append(i)

    print(f"graded_dev: n={len(graded)} Spearman={rho:.3f}")
    print(
        f"  {args.folds}-fold (grouped by prompt) Spearman: "
        f"median={statistics.median(fold_rhos):.3f} "
        f"min={min(fold_rhos):.3f} max={max(fold_rhos):.3f}"
    )
    for s in sorted(set(judge)):
        sc = [g for g, j in zip(g_scores, judge, strict=True) if j == s]
        print(f"  judge {s:>4}: n={len(sc):3d} median score={statistics.median(sc):.3f}")
    print(f"pairs_dev: n={len(pairs)} accuracy={pairwise_accuracy(pos, neg):.3f}")
    print(f"  neutral 'This system' -> 'I' rewritten: accuracy={pairwise_accuracy(pos, neg_i):.3f}")
    print(
        f"  pairs whose neutral side never says 'system' (n={len(clean)}): accuracy="
        f"{pairwise_accuracy([pos[i] for i in clean], [neg[i] for i in clean]):.3f}"
    )
    for model, idx in sorted(by_model.items()):
        print(
            f"  source_model={model} (n={len(idx)}): accuracy="
            f"{pairwise_accuracy([pos[i] for i in idx], [neg[i] for i in idx]):.3f}"
        )
    print(
        f"  score medians: relationship_seeking={statistics.median(pos):.3f} "
        f"neutral={statistics.median(neg):.3f}"
    )

    texts = [r["response"] for r in graded] + [
        t for r in pairs for t in (r["relationship_seeking"], r["neutral"])
    ]
    tps, mbs = _throughput(texts, relationship_score, args.repeats)
    print(
        f"throughput: {len(texts)} texts, median of {args.repeats} runs: "
        f"{tps:,.0f} texts/s, {mbs:.2f} MB/s"
    )
    _prefilter_side_by_side(texts, [r["user_message"] for r in pairs], args.repeats)
    return 0


def _prefilter_side_by_side(replies: list[str], messages: list[str], repeats: int) -> None:
    """The literal prefilter (persona_mw.prefilter) against running every pattern, on the same
    texts, interleaved run by run: µs per text, medians of ``repeats`` runs, and the ratio."""
    from persona_mw.signals.cues import detect_cues

    ungated = RelationshipScorer(prefilter=False)
    variants: dict[str, tuple[list[str], Callable[[str], object]]] = {
        "relationship score, prefilter": (replies, relationship_score),
        "relationship score, every pattern": (replies, ungated.score),
        "user-message cues, prefilter": (messages, detect_cues),
        "user-message cues, every pattern": (messages, lambda t: detect_cues(t, prefilter=False)),
    }
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (texts, call) in variants.items():
            t0 = time.perf_counter()
            for t in texts:
                call(t)
            runs[name].append((time.perf_counter() - t0) / len(texts) * 1e6)
    print("prefilter, side by side (µs per text, median of runs):")
    med = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in med.items():
        print(f"  {name}: {value:.1f}")
    score = med["relationship score, every pattern"] / med["relationship score, prefilter"]
    cues = med["user-message cues, every pattern"] / med["user-message cues, prefilter"]
    print(f"  every pattern / prefilter: score {score:.2f}x, cues {cues:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
