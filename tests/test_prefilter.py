"""The literal prefilter skips only patterns that cannot match: checked on generated matches of
every lexicon pattern, on real development texts (many languages, the relationship-seeking
pairs), against Unicode's own case and space rules, and end to end (scores unchanged)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_mw.bounds.relationship import CUE_FAMILIES, RelationshipScorer
from persona_mw.prefilter import LiteralGate, fold_ignorecase, required_literals
from persona_mw.signals.cues import CUE_PATTERNS, detect_cues

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "relationship_seeking"

CUE_LIST = [pattern for rules in CUE_PATTERNS.values() for pattern, _ in rules]
FAMILY_LIST = [family.pattern for family in CUE_FAMILIES]
LEXICONS = [*CUE_LIST, *FAMILY_LIST]


def _corpus() -> list[str]:
    texts: list[str] = []
    for path in sorted((ROOT / "tests" / "data" / "detection").glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines() if line]
    pairs = SHARED / "pairs_dev.jsonl"
    if pairs.exists():
        for line in pairs.read_text().splitlines()[:400]:
            row = json.loads(line)
            texts += [row["user_message"], row["relationship_seeking"], row["neutral"]]
    return texts


CORPUS = _corpus()


def _matching(patterns: list[re.Pattern[str]], text: str) -> list[bool]:
    return [pattern.search(text) is not None for pattern in patterns]


def test_the_corpus_is_real_and_varied() -> None:
    assert len(CORPUS) > 500
    assert any(not text.isascii() for text in CORPUS)


@pytest.mark.parametrize("patterns", [CUE_LIST, FAMILY_LIST], ids=["cues", "relationship"])
def test_no_pattern_that_matches_a_real_text_is_skipped(patterns: list[re.Pattern[str]]) -> None:
    gate = LiteralGate(patterns)
    skipped_somewhere = 0
    for text in CORPUS:
        may = gate.candidates(text)
        for i, matches in enumerate(_matching(patterns, text)):
            assert may[i] or not matches, (patterns[i].pattern[:80], text)
        skipped_somewhere += may.count(False)
    # and it is worth having: most (pattern, text) pairs are skipped
    assert skipped_somewhere > 0.7 * len(CORPUS) * len(patterns)


@pytest.mark.parametrize("index", range(len(LEXICONS)))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_generated_match_passes_the_gate(index: int, data: st.DataObject) -> None:
    pattern = LEXICONS[index]
    text = data.draw(st.from_regex(pattern))
    if pattern.search(text) is None:  # the generator does not honour every lookaround
        return
    assert LiteralGate([pattern]).candidates(text) == (True,), (pattern.pattern[:80], text)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz'’ \t\n.İıſK!?AEIOU")),
        max_size=60,
    ),
    words=st.lists(st.sampled_from(sorted(required_literals(FAMILY_LIST[0]) or ())), max_size=3),
)
def test_random_text_around_literals_never_hides_a_match(text: str, words: list[str]) -> None:
    full = text + " ".join(words) + text.upper()
    gate = LiteralGate(LEXICONS)
    may = gate.candidates(full)
    for i, matches in enumerate(_matching(LEXICONS, full)):
        assert may[i] or not matches, (LEXICONS[i].pattern[:80], full)


def test_the_ascii_fold_covers_every_letter_ignorecase_equates_with_ascii() -> None:
    # what re.IGNORECASE equates with an ASCII letter, asked of re itself, over the BMP and the
    # planes above it where cased letters live
    letters = {a: re.compile(re.escape(a), re.IGNORECASE) for a in "abcdefghijklmnopqrstuvwxyz"}
    for code in range(0x80, 0x20000):
        ch = chr(code)
        for a, pattern in letters.items():
            if pattern.fullmatch(ch):
                assert fold_ignorecase(ch) == a, hex(code)


def test_white_space_is_what_re_calls_white_space() -> None:
    space = re.compile(r"\s")
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        assert bool(space.fullmatch(ch)) == ch.isspace(), hex(code)


def test_literals_read_off_a_pattern() -> None:
    assert required_literals(re.compile(r"\bI(?:'m| am)\s+here\s+for\s+you\b", re.I)) == {
        "i'm here for you",
        "i am here for you",
    }
    assert required_literals(re.compile(r"aw+\b|wow")) == {"aw", "wow"}
    assert required_literals(re.compile(r"(?:x|\d)yz")) == {"yz"}
    assert required_literals(re.compile(r"\d+|abc")) is None  # one alternative has no literal
    assert required_literals(re.compile(r"a(?i:bc)")) is None  # scoped flags are not followed
    # non-ASCII letters end a case-insensitive literal (only ASCII is compared folded)
    assert required_literals(re.compile(r"schöne\s+grüße", re.I)) == {"ne gr"}


def test_a_skipped_pattern_costs_nothing_to_a_case_insensitive_match() -> None:
    gate = LiteralGate([re.compile(r"miss you", re.I), re.compile(r"kelvin", re.I)])
    assert gate.candidates("I MİSS YOU") == (True, False)
    assert gate.candidates("\u212aelvin") == (False, True)
    # a run of white space is one space to the gate: it lets through more than matches
    # (here the pattern wants one space), never less
    assert gate.candidates("i miss\n\t you") == (True, False)
    spaced = LiteralGate([re.compile(r"miss\s+you", re.I)])
    assert spaced.candidates("MISS \u2003\n you") == (True,)


def test_scores_and_cues_are_the_same_with_and_without_the_prefilter() -> None:
    gated, ungated = RelationshipScorer(), RelationshipScorer(prefilter=False)
    for text in CORPUS:
        assert gated.explain(text) == ungated.explain(text), text
    flagged = [detect_cues(text) for text in CORPUS]
    assert any(flagged), "the corpus exercises the cue patterns"


def test_a_lone_surrogate_runs_every_pattern() -> None:
    gate = LiteralGate([re.compile("love"), re.compile("hate")])
    assert gate.candidates("\ud800 I love you") == (True, True)
