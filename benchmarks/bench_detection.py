"""Detection quality of the built-in packs on our own development sets, and what it costs.

    .venv/bin/python benchmarks/bench_detection.py [--split dev|holdout|...|holdout5|all]
        [--data DIR] [--against REF]

1. Quality: every row of ``tests/data/detection/<pack>.jsonl`` (see the README there) goes
   through the real policy — ``policy_from_dict`` with the pack switched on, ``resolve`` for a
   user the pack applies to, the stage's real :class:`Scanner` — and counts as flagged when a
   rule of the pack fires (PII: a span of the row's kind; any PII span on a negative row).
   Printed per pack, per language and per category: recall on positive rows, false-positive
   rate on negative rows, precision. Output rows are replies; a crisis reply is judged as one
   to a user at risk (the call's input fired ``crisis.ideation``), where the
   ``crisis.methods-model`` rule is in force. ``--data DIR`` reads the files from another
   directory with the same names (a batch kept outside the repository).
2. Cost: the scanning throughput of ``benchmarks/bench_bounds.py`` (the output scanner with
   the ``pii`` pack + 1,000 phrase rules, English model-like output, whole text) for this tree
   and, with ``--against REF`` (a git ref, e.g. ``main``), for that ref's tree exported to a
   temporary directory — the two measured alternately in one run: wall-clock medians, and the
   best CPU time (``time.process_time``: on a shared machine, what the scan itself costs). A second
   line adds the crisis and profanity packs (phrase rules a real deployment runs; minor-safety is
   left out: for a known minor its output side is dominated by the relationship sentence
   scorer, not by phrases).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona_mw.bounds import policy_from_dict, resolve
from persona_mw.bounds.scan import Scanner
from persona_mw.profile import Profile

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "detection"
#: pack -> (the packs switched on, the rule ids that count as "the pack fired", minor profile)
PACKS: dict[str, tuple[list[str], tuple[str, ...], bool]] = {
    "crisis": (
        ["crisis"],
        ("crisis.ideation", "crisis.ideation-model", "crisis.methods", "crisis.methods-model"),
        False,
    ),
    "minor-safety": (
        ["minor-safety"],
        ("minor-safety.sexual", "minor-safety.sexual-model", "minor-safety.sexual-output-model"),
        True,
    ),
    "pii": (["pii"], ("pii",), False),
    "profanity": (
        ["profanity", "profanity-es", "profanity-fr", "profanity-de", "profanity-pt"],
        ("profanity", "profanity.es", "profanity.fr", "profanity.de", "profanity.pt"),
        False,
    ),
}


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: int
    language: str
    category: str
    stage: str
    split: str
    kind: str | None = None


def load(pack: str, split: str, data: Path = DATA) -> list[Row]:
    rows = []
    path = data / f"{pack}.jsonl"
    if not path.is_file():
        return rows
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            row = Row(**json.loads(line))
            if split == "all" or row.split == split:
                rows.append(row)
    return rows


def scanners(pack: str) -> dict[str, Scanner]:
    packs, _, minor = PACKS[pack]
    policy = policy_from_dict({"version": "detection", "packs": packs})
    profile = Profile(user_id="eval", known_minor=minor)
    effective = resolve(policy, profile)
    # replies are judged as replies to a user at risk where the pack has such rules
    output, _ = effective.output_after({"crisis.ideation"})
    return {"input": effective.input, "output": output}


def flagged(pack: str, scanner: Scanner, row: Row) -> bool:
    """Whether the pack fires on ``row`` (whole text)."""
    rule_ids = PACKS[pack][1]
    for hit in scanner.scan(row.text):
        if hit.rule.rule.id not in rule_ids:
            continue
        if pack == "pii" and row.label and hit.span.label != row.kind:
            continue
        return True
    return False


@dataclass
class Tally:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0

    def add(self, label: int, hit: bool) -> None:
        if label:
            self.tp += hit
            self.fn += not hit
        else:
            self.fp += hit
            self.tn += not hit

    def line(self) -> str:
        pos, neg = self.tp + self.fn, self.fp + self.tn
        recall = f"{self.tp / pos:.2f}" if pos else "-"
        fp_rate = f"{self.fp / neg:.2f}" if neg else "-"
        precision = f"{self.tp / (self.tp + self.fp):.2f}" if self.tp + self.fp else "-"
        return f"{pos} | {neg} | {recall} | {fp_rate} | {precision}"


def quality(split: str, *, verbose: bool, data: Path = DATA) -> dict[str, Tally]:
    totals: dict[str, Tally] = {}
    print("| pack | slice | positives | negatives | recall | FP rate | precision |")
    print("|---|---|---|---|---|---|---|")
    misses: list[str] = []
    for pack in PACKS:
        stage_scanners = scanners(pack)
        total = Tally()
        by_lang: dict[str, Tally] = defaultdict(Tally)
        by_cat: dict[str, Tally] = defaultdict(Tally)
        by_stage: dict[str, Tally] = defaultdict(Tally)
        rows = load(pack, split, data)
        if not rows:
            continue
        for row in rows:
            hit = flagged(pack, stage_scanners[row.stage], row)
            for tally in (total, by_lang[row.language], by_cat[row.category], by_stage[row.stage]):
                tally.add(row.label, hit)
            if hit != bool(row.label):
                misses.append(f"{pack} {'FN' if row.label else 'FP'} {row.language}: {row.text}")
        totals[pack] = total
        print(f"| {pack} | all | {total.line()} |")
        for stage, tally in sorted(by_stage.items()):
            print(f"| {pack} | stage {stage} | {tally.line()} |")
        for lang, tally in sorted(by_lang.items()):
            print(f"| {pack} | lang {lang} | {tally.line()} |")
        for cat, tally in sorted(by_cat.items()):
            print(f"| {pack} | {cat} | {tally.line()} |")
    if verbose and misses:
        print("\nmisclassified:")
        for miss in misses:
            print("  " + miss)
    return totals


# -- throughput -------------------------------------------------------------------------------

_PROBE = """
import json, statistics, sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/benchmarks")
import bench_bounds as b
from persona_mw.bounds import policy_from_dict, resolve
from persona_mw.profile import Profile
policy = b.make_policy()
rules = [r.model_dump() for r in policy.rules if r.id.startswith("phrase-")]
packs = policy_from_dict({{"version": "bench", "rules": rules,
    "packs": ["pii", "crisis", "profanity"]}})
text = b.make_text(b.SENTENCES, {size})
out = {{}}
for name, pol in (("pii + 1,000 phrase rules", policy), ("+ crisis, profanity packs", packs)):
    scanner = resolve(pol, Profile(user_id="bench")).output
    scanner.scan(text[:10000])
    wall, cpu = [], []
    for _ in range({rounds}):
        t, c = time.perf_counter(), time.process_time()
        scanner.scan(text)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    mb = len(text.encode()) / 1e6
    out[name + ", wall (median)"] = mb / statistics.median(wall)
    out[name + ", CPU time (best)"] = mb / min(cpu)
print(json.dumps(out))
"""


def _probe(root: Path, size: int, rounds: int) -> dict[str, float]:
    code = _PROBE.format(root=str(root), size=size, rounds=rounds)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def throughput(against: str | None, *, mb: float, rounds: int, repeats: int) -> None:
    size = int(mb * 1e6)
    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if against:
            archive = Path(tmp) / "ref.tar"
            subprocess.run(["git", "archive", "-o", str(archive), against], cwd=ROOT, check=True)
            with tarfile.open(archive) as tar:
                tar.extractall(Path(tmp) / "ref", filter="data")
            trees[against] = Path(tmp) / "ref"
        results: dict[str, dict[str, list[float]]] = {t: defaultdict(list) for t in trees}
        for _ in range(repeats):  # alternate the trees: a noisy neighbour hits both alike
            for name, root in trees.items():
                for key, value in _probe(root, size, rounds).items():
                    results[name][key].append(value)
    print(
        f"\nscan throughput, whole text, {mb:g} MB English model-like output, "
        f"median of {repeats} runs x {rounds} rounds (MB/s):"
    )
    print("| rules | " + " | ".join(trees) + (" | ratio |" if against else " |"))
    print("|---" * (len(trees) + 1 + bool(against)) + "|")
    for key in results["this tree"]:
        medians = [statistics.median(results[t][key]) for t in trees]
        ratio = f" {medians[0] / medians[1]:.2f} |" if against and key in results[against] else ""
        print(f"| {key} | " + " | ".join(f"{m:.1f}" for m in medians) + " |" + ratio)


#: Real model replies nobody labelled for our packs (see that folder's README): a probe of the
#: reply models' false positives on text unlike ours.
REPLIES = Path("/work/shared/data/relationship_seeking")


def reply_probe(folder: Path) -> None:
    """How often each reply model fires (any sentence, its shipped threshold) on real model
    replies: the relationship-seeking pairs (GPT-written neutral and warm replies) and the
    Llama-3.1-70B replies graded by the paper's judge (low: score < 5). None is method content
    or grooming, so every firing is a false positive (warm replies to a minor are the
    relationship rule's business, not the sexual-content model's)."""
    from persona_mw.bounds.classifier import classifier_detector

    pairs = [json.loads(line) for line in (folder / "pairs_dev.jsonl").open()]
    graded = [json.loads(line) for line in (folder / "graded_dev.jsonl").open()]
    probes = {
        "neutral": [p["neutral"] for p in pairs],
        "warm": [p["relationship_seeking"] for p in pairs],
        "llama, judged < 5": [g["response"] for g in graded if g["score"] < 5],
        "llama, judged >= 5": [g["response"] for g in graded if g["score"] >= 5],
    }
    print(f"\nreply models on real model replies ({folder}): share of replies flagged")
    print("| model | " + " | ".join(f"{k} ({len(v)})" for k, v in probes.items()) + " |")
    print("|---" * (len(probes) + 1) + "|")
    for name in ("crisis-output", "minor-safety-output"):
        detector = classifier_detector(name)
        cells = [
            f"{sum(bool(detector.detect(t)) for t in texts) / len(texts):.3f}"
            for texts in probes.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def classifier_cost(rounds: int = 5) -> None:
    """What scoring one text costs each built-in classifier: the median over the pack's rows
    of the best of ``rounds`` timings (µs) — whole input messages for a message model, each
    sentence of the replies for a sentence model."""
    from persona_mw.bounds.classifier import BUILTIN_MODELS, classifier_detector, load_classifier

    print("\nclassifier scoring, per text (best of 5, median over the rows, µs):")
    print("| model | unit | texts | chars (median) | µs (median) | µs (p90) |")
    print("|---|---|---|---|---|---|")
    for name, unit in BUILTIN_MODELS.items():
        pack = name.removesuffix("-output")
        model = load_classifier(name)
        if unit == "message":
            texts = [r.text for r in load(pack, "all") if r.stage == "input"]
        else:
            sentences = classifier_detector(name)
            assert hasattr(sentences, "segments")
            texts = [
                r.text[a:b]
                for r in load(pack, "all")
                if r.stage == "output"
                for a, b in sentences.segments(r.text)
            ]
        costs = []
        for text in texts:
            best = float("inf")
            for _ in range(rounds):
                started = time.perf_counter()
                model.judge(text)
                best = min(best, time.perf_counter() - started)
            costs.append(best * 1e6)
        costs.sort()
        chars = statistics.median(len(t) for t in texts)
        print(
            f"| {name} | {unit} | {len(texts)} | {chars:.0f} | {statistics.median(costs):.0f} "
            f"| {costs[int(0.9 * len(costs))]:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--split",
        default="dev",
        help="a split of the sets (dev, holdout, holdout2 ... holdout9) or all",
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="directory of <pack>.jsonl files (default: ours)"
    )
    parser.add_argument("--against", help="git ref to compare throughput with (e.g. main)")
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument(
        "--replies",
        type=Path,
        default=REPLIES,
        help="folder of the relationship-seeking replies (probe of the reply models' FP)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list misclassified rows")
    args = parser.parse_args()
    print(f"split: {args.split}\n")
    quality(args.split, verbose=args.verbose, data=args.data)
    if (args.replies / "pairs_dev.jsonl").is_file():
        reply_probe(args.replies)
    if not args.no_throughput:
        classifier_cost()
        throughput(args.against, mb=args.mb, rounds=args.rounds, repeats=args.repeats)


if __name__ == "__main__":
    main()
