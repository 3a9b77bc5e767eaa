"""The built-in packs on our development sets (tests/data/detection, see its README), through
the real policy: ``policy_from_dict`` with the pack on, ``resolve`` for a user the pack applies
to, the stage's real scanner — on the whole text, and streamed in 3-character chunks through the
real :class:`StreamFilter`. Per pack and per language: recall >= 0.95, false-positive rate
<= 5% (the issue-13 bar). Every rule of the pack counts, the trained classifiers too (for them
the dev split is in-sample); a crisis reply is judged as a reply to a user at risk, where the
method classifier is in force. The held-out splits are measured by
benchmarks/bench_detection.py, not asserted: they tell whether the rules generalise.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from persona_mw.bounds import StreamFilter, policy_from_dict, resolve
from persona_mw.bounds.scan import Scanner, hold_back_for
from persona_mw.profile import Profile

DATA = Path(__file__).resolve().parent.parent / "data" / "detection"
_PROFANITY = ("profanity", "profanity-es", "profanity-fr", "profanity-de", "profanity-pt")
#: pack -> (the packs switched on, rule ids that count as the pack firing, user is a minor)
PACKS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "crisis": (
        ("crisis",),
        ("crisis.ideation", "crisis.ideation-model", "crisis.methods", "crisis.methods-model"),
        False,
    ),
    "minor-safety": (
        ("minor-safety",),
        ("minor-safety.sexual", "minor-safety.sexual-model", "minor-safety.sexual-output-model"),
        True,
    ),
    "pii": (("pii",), ("pii",), False),
    "profanity": (_PROFANITY, tuple(p.replace("-", ".") for p in _PROFANITY), False),
}


def _rows(pack: str) -> list[dict[str, Any]]:
    lines = (DATA / f"{pack}.jsonl").read_text("utf-8").splitlines()
    return [row for row in map(json.loads, lines) if row["split"] == "dev"]


def _scanners(pack: str) -> dict[str, Scanner]:
    packs, _, minor = PACKS[pack]
    effective = resolve(
        policy_from_dict({"version": "sets", "packs": list(packs)}),
        Profile(user_id="sets", known_minor=minor),
    )
    output, _ = effective.output_after({"crisis.ideation"})
    return {"input": effective.input, "output": output}


def _fired_whole(pack: str, scanner: Scanner, row: dict[str, Any]) -> bool:
    _, rule_ids, _ = PACKS[pack]
    return any(
        h.rule.rule.id in rule_ids
        and (not row["label"] or "kind" not in row or h.span.label == row["kind"])
        for h in scanner.scan(row["text"])
    )


def _fired_streamed(pack: str, scanner: Scanner, row: dict[str, Any]) -> bool:
    _, rule_ids, _ = PACKS[pack]
    text = row["text"]
    stream = StreamFilter(scanner, None, hold_back=hold_back_for(scanner))
    for i in range(0, len(text), 3):
        stream.feed(text[i : i + 3])
    stream.finish()
    return any(
        d.rule_id in rule_ids
        and (not row["label"] or "kind" not in row or any(s.label == row["kind"] for s in d.spans))
        for d in stream.decisions
    )


def _check(pack: str, fired: Any) -> None:
    scanners = _scanners(pack)
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # tp, pos, fp, neg
    misses = []
    for row in _rows(pack):
        hit = fired(pack, scanners[row["stage"]], row)
        tally = tallies[row["language"]]
        if row["label"]:
            tally[0] += hit
            tally[1] += 1
        else:
            tally[2] += hit
            tally[3] += 1
        if hit != bool(row["label"]):
            misses.append(row["text"])
    for language, (tp, pos, fp, neg) in tallies.items():
        assert not pos or tp / pos >= 0.95, (pack, language, f"recall {tp}/{pos}", misses)
        assert not neg or fp / neg <= 0.05, (pack, language, f"FP {fp}/{neg}", misses)


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_pack_on_dev_set_whole_text(pack: str) -> None:
    _check(pack, _fired_whole)


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_pack_on_dev_set_streamed(pack: str) -> None:
    """The same verdicts when the text arrives 3 characters at a time (the stream hold-back
    must cover obfuscated, spaced-out and stretched spellings too)."""
    _check(pack, _fired_streamed)


@pytest.mark.parametrize(
    ("pack", "stage", "text"),
    [
        # someone else's words, reported by a writer who is worried for them
        (
            "crisis",
            "input",
            "minha amiga disse que quer morrer, o que eu faço? conto pros pais dela?",
        ),
        ("crisis", "input", "il mio ragazzo dice che vuole farla finita, non so cosa fare"),
        ("crisis", "input", "mon frère m'a dit qu'il avait envie d'en finir, je fais quoi ?"),
        ("crisis", "input", "my sister told me she wants to kill herself, how do i help her"),
        # the naked mole rat, the class, the colour, a request refused or reported, a refusal
        ("minor-safety", "input", "por qué la rata topo desnuda vive tanto?"),
        ("minor-safety", "input", "how do condoms work? we had sex ed today"),
        ("minor-safety", "input", "fond de teint nude ou beige, c'est quoi la différence?"),
        ("minor-safety", "input", "Comment signaler un adulte qui m'a demandé des nudes ?"),
        ("minor-safety", "input", "qqn m'a demandé des nudes j'ai dit non mais il insiste"),
        ("minor-safety", "output", "I can't do romantic or sexual roleplay, but I can help."),
    ],
)
def test_the_phrase_lists_leave_reports_and_refusals_alone(
    pack: str, stage: str, text: str
) -> None:
    phrase_rule = {"crisis": "crisis.ideation", "minor-safety": "minor-safety.sexual"}[pack]
    fired = {h.rule.rule.id for h in _scanners(pack)[stage].scan(text)}
    assert phrase_rule not in fired


@pytest.mark.parametrize(
    "text",
    [
        "my friend said she wants to die, and honestly i want to die too",
        "mi amigo dice que se quiere morir y yo también me quiero morir",
        "llevaba 8 meses sin hacerme daño y ayer recaí",  # a relapse, not a recovery
    ],
)
def test_the_writers_own_words_still_fire_beside_a_report(text: str) -> None:
    assert "crisis.ideation" in {h.rule.rule.id for h in _scanners("crisis")["input"].scan(text)}
