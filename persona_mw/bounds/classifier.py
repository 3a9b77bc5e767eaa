"""A linear text classifier over character and word n-grams, trained on our own data sets.

Phrase lists catch the wording they list. Measured on a batch of messages written by another
hand before the lists were read (``holdout4`` in ``tests/data/detection``), the crisis and
minor-safety phrase packs found 0.54-0.57 and 0.53-0.60 of what they should: people state the
same thought in too many ways. A logistic regression over TF-IDF weighted character n-grams
(inside words, 2-5 characters: typos, inflections and joined words share most of them) and word
uni- and bigrams, trained on the development sets, finds most of the rest (figures in
docs/benchmarks.md, "A trained classifier beside the phrase lists").

The model is a JSON file (``persona_mw/bounds/models/<name>.json``) that
``scripts/train_classifiers.py`` writes with scikit-learn from the data in the repository; its
``trained`` member records the data's digest, and a test retrains it and compares. Scoring here
is plain Python, as scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` and
``LogisticRegression.predict_proba`` compute it (a test checks they agree): no model weights or
data come from anywhere at run time, and nothing heavier than this module is imported.

A model judges one *unit* of text, recorded in the model file: an input model (``crisis``,
``minor-safety``) a whole user message, so its rules are input rules; an output model
(``crisis-output``, ``minor-safety-output``), trained on replies and their sentences, one
sentence of a reply at a time (:class:`~persona_mw.bounds.detectors.SentenceDetector`), so a
stream holds back only the sentence being written.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from ..types import Detector, Span
from .detectors import SentenceDetector
from .normalise import fold

__all__ = [
    "BUILTIN_MODELS",
    "MIN_WORDS",
    "SENTENCE_CONTEXT",
    "ClassifierDetector",
    "TextClassifier",
    "Unit",
    "classifier_detector",
    "load_classifier",
    "model_text",
]

#: Below this many words a message is left to the phrase lists: a greeting or a one-word reply
#: holds too few n-grams for a score to mean anything ("Hey" scored near the threshold). Only
#: words with a letter count: "4111 1111 1111 1111, keep it" is two words, not six (it scored
#: 0.66 for crisis).
MIN_WORDS = 3
_LETTERED = re.compile(r"[^\W\d_]")
#: Characters before a reply's sentence that a sentence model reads with it (a list item, a
#: story's next line): on replies by other hands, crisis-output found 0.90 of method replies
#: at 2.6 % false positives with it and 0.86 at 3.1 % without (threshold 0.5).
SENTENCE_CONTEXT = 150
#: What a model judges: a whole user message (input rules) or one sentence of a reply (output).
Unit = Literal["message", "sentence"]
#: The models shipped with the package, and the unit each judges.
BUILTIN_MODELS: dict[str, Unit] = {
    "crisis": "message",
    "minor-safety": "message",
    "crisis-output": "sentence",
    "minor-safety-output": "sentence",
}
FORMAT = "persona_mw.linear-text-classifier/1"
Analyzer = Literal["char_wb", "word"]


#: Three or more single letters one space apart (after folding, so "f.u.c.k" too): a word
#: spelled out. Two spaces or more end the word: "m a n d a m e  a l g o" is two words.
_SPELLED_OUT = re.compile(r"(?<![^\W_])(?:[^\W\d_] ){2,}[^\W\d_](?![^\W_])")
#: A word with a digit after a letter: leetspeak ("v1vr3", "k1ll", "n00dz"). Digits that lead
#: a word stay ("14yo", "3rd").
_LEET_WORD = re.compile(r"\b\d*[^\W\d_][^\W_]*\d[^\W_]*\b")
_LEET = str.maketrans("0134578", "oieastb")


def _unleet(match: re.Match[str]) -> str:
    word = match.group()
    lead = len(word) - len(word.lstrip("0123456789"))
    return word[:lead] + word[lead:].translate(_LEET)


def model_text(text: str) -> str:
    """What the model reads: folded (lower case, accents, look-alike and full-width characters,
    punctuation to spaces; :func:`persona_mw.bounds.normalise.fold`), spelled-out words joined
    and leet digits read as letters, single-spaced. (A model judges a whole message or
    sentence, so it needs no offsets back into the text, unlike the phrase lists' views.)"""
    folded = _SPELLED_OUT.sub(lambda m: m.group().replace(" ", ""), fold(text).text)
    return " ".join(_LEET_WORD.sub(_unleet, folded).split())


def _char_wb(text: str, low: int, high: int) -> list[str]:
    """scikit-learn's ``char_wb`` analyzer: n-grams inside each word padded with spaces; a word
    shorter than ``n`` counts once."""
    grams: list[str] = []
    for word in text.split():
        padded = f" {word} "
        length = len(padded)
        for n in range(low, high + 1):
            offset = 0
            grams.append(padded[:n])
            while offset + n < length:
                offset += 1
                grams.append(padded[offset : offset + n])
            if offset == 0:
                break
    return grams


def _words(text: str, low: int, high: int) -> list[str]:
    """scikit-learn's ``word`` analyzer with its default tokens (two or more word characters)."""
    tokens = [t for t in text.split() if len(t) > 1]
    grams: list[str] = []
    for n in range(low, high + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


@dataclass(frozen=True, slots=True)
class _Block:
    """One vectorizer's part of the model: each feature's idf and coefficient."""

    analyzer: Analyzer
    low: int
    high: int
    features: dict[str, tuple[float, float]]

    def contribution(self, text: str) -> float:
        grams = (_char_wb if self.analyzer == "char_wb" else _words)(text, self.low, self.high)
        dot = norm = 0.0
        features = self.features
        for gram, count in Counter(grams).items():
            feature = features.get(gram)
            if feature is None:
                continue
            value = (1.0 + math.log(count)) * feature[0]
            norm += value * value
            dot += value * feature[1]
        return dot / math.sqrt(norm) if norm else 0.0


class TextClassifier:
    """``score(text)``: the probability that ``text`` belongs to the model's class."""

    def __init__(self, data: dict[str, object], *, source: str) -> None:
        if data.get("format") != FORMAT:
            raise ConfigError(
                f"{source}: not a persona_mw classifier model (format {data.get('format')!r}, "
                f"expected {FORMAT!r}); write one with scripts/train_classifiers.py"
            )
        self.name = str(data["name"])
        unit = data.get("unit", "message")
        if unit not in ("message", "sentence"):
            raise ConfigError(
                f"{source}: unit {unit!r} is neither 'message' nor 'sentence'; retrain the model"
            )
        self.unit: Unit = "sentence" if unit == "sentence" else "message"
        self.threshold = float(data["threshold"])  # type: ignore[arg-type]
        self.intercept = float(data["intercept"])  # type: ignore[arg-type]
        blocks = data["blocks"]
        assert isinstance(blocks, list)
        self._blocks = tuple(
            _Block(
                b["analyzer"],
                int(b["ngram_range"][0]),
                int(b["ngram_range"][1]),
                {k: (float(v[0]), float(v[1])) for k, v in b["features"].items()},
            )
            for b in blocks
        )

    def score(self, text: str) -> float:
        folded = model_text(text)
        z = self.intercept + sum(block.contribution(folded) for block in self._blocks)
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0

    def judge(self, text: str) -> float:
        """The score a rule reads: 0 for a text of fewer than :data:`MIN_WORDS` words with a
        letter."""
        words = 0
        for word in text.split():
            words += _LETTERED.search(word) is not None
            if words >= MIN_WORDS:
                return self.score(text)
        return 0.0


@lru_cache(maxsize=16)
def load_classifier(model: str) -> TextClassifier:
    """A built-in model by name (:data:`BUILTIN_MODELS`) or a model file by path; loaded once
    per process (~10 MB and ~0.2 s each)."""
    if model in BUILTIN_MODELS:
        source = f"built-in model {model!r}"
        text = resources.files(__package__).joinpath("models", f"{model}.json").read_text("utf-8")
    else:
        path = Path(model)
        source = str(path)
        if path.suffix != ".json" or not path.is_file():
            raise ConfigError(
                f"classifier model {model!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}) "
                "nor a .json model file; train one with scripts/train_classifiers.py"
            )
        text = path.read_text("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc}); retrain the model") from exc
    return TextClassifier(data, source=source)


class ClassifierDetector:
    """The whole text from ``start`` when a message model's score reaches ``threshold``.

    A message is judged whole, so a stream would hold everything: rules with this detector are
    input rules (the policy refuses one on output)."""

    name = "classifier"

    def __init__(self, model: str, *, threshold: float | None = None) -> None:
        self.classifier = load_classifier(model)
        self.threshold = self.classifier.threshold if threshold is None else threshold
        self.max_span = 1 << 20

    def detect(self, text: str, start: int = 0) -> list[Span]:
        if self.classifier.judge(text[start:]) >= self.threshold:
            return [Span(start, len(text), self.classifier.name)]
        return []

    def live_start(self, text: str, start: int = 0) -> int:
        """Everything from ``start``: a message is judged whole."""
        return start


def classifier_detector(model: str, *, threshold: float | None = None) -> Detector:
    """The detector for ``model``: the whole message for a message model, each sentence for a
    sentence model (fires as ``classifier``)."""
    classifier = load_classifier(model)
    if classifier.unit == "message":
        return ClassifierDetector(model, threshold=threshold)
    return SentenceDetector(
        "classifier",
        classifier.judge,
        threshold=classifier.threshold if threshold is None else threshold,
        context=SENTENCE_CONTEXT,
    )
