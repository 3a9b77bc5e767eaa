"""Streams and the built-in packs (issues 13 and 14 together): the development sets'
texts, obfuscated the ways the packs see through (spaced-out, dotted, leet, stretched letters,
compounds, context phrases, numbers with Unicode separators, spelled-out e-mail addresses),
mixed with prose and chunked at random (one character at a time included). The released text
equals the whole-text result, and nothing the whole text blocks or redacts ever leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona_mw.bounds import (
    StreamFilter,
    apply_redactions,
    decisions_for,
    policy_from_dict,
    resolve,
)
from persona_mw.bounds.scan import Scanner, hold_back_for
from persona_mw.profile import Profile

DATA = Path(__file__).resolve().parent.parent / "data" / "detection"
_PROFANITY = ["profanity", "profanity-es", "profanity-fr", "profanity-de", "profanity-pt"]


def _scanner(packs: list[str], *, minor: bool, stage: str = "output") -> Scanner:
    effective = resolve(
        policy_from_dict({"version": "streams", "packs": packs}),
        Profile(user_id="streams", known_minor=minor),
    )
    return effective.input if stage == "input" else effective.output


#: Every built-in pack that applies to each kind of user, on the output stage.
SCANNERS = {
    "adult": _scanner(["crisis", "pii", *_PROFANITY], minor=False),
    "minor": _scanner(["crisis", "pii", "minor-safety"], minor=True),
    # without pii, nothing else holds the word being written: the phrase rules must
    "profanity-only": _scanner(_PROFANITY, minor=False),
    # crisis.ideation is lenient: its respelled view (fillers, typos) streamed too
    "crisis-input": _scanner(["crisis"], minor=False, stage="input"),
}
TEXTS = sorted(
    {
        json.loads(line)["text"]
        for name in ("crisis", "minor-safety", "pii", "profanity")
        for line in (DATA / f"{name}.jsonl").read_text("utf-8").splitlines()
    }
)
PROSE = [
    "Sure, here is what I found. ",
    "Look at this dot com bubble. ",
    "The answer is 42. ",
    "I am at home at 5. ",
    "classic Scunthorpe assassin ",
    "Moby Dick is a novel. ",
    "\n\n",
    " ",
    ", ",
    "Call me at ",
    "my number is ",
    "social security number ",
    "reach me at ",
]
_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "$", "t": "7"})
_SEPARATORS = ["\u00a0", "\u202f", "\u2009", "\u2013", "\u2011", ".", "/", " "]


def _spaced(word: str, gap: str) -> str:
    return gap.join(word)


@st.composite
def obfuscated(draw: st.DrawFn) -> str:
    """One dev-set text, left as it is or obfuscated one of the ways the packs handle."""
    text = draw(st.sampled_from(TEXTS))
    how = draw(
        st.sampled_from(
            ["plain", "spaced", "dotted", "leet", "stretched", "compound", "separators", "at"]
        )
    )
    words = text.split(" ")
    k = draw(st.integers(0, len(words) - 1))
    word = words[k]
    if how == "spaced":
        words[k] = _spaced(word, " ")
    elif how == "dotted":
        words[k] = _spaced(word, draw(st.sampled_from([".", "-", "*"])))
    elif how == "leet":
        words[k] = word.translate(_LEET)
    elif how == "stretched" and word:
        i = draw(st.integers(0, len(word) - 1))
        words[k] = word[:i] + word[i] * draw(st.integers(3, 7)) + word[i + 1 :]
    elif how == "compound":
        piece = draw(st.sampled_from(["wit", "face", "cluster", "super", "er", "ing"]))
        words[k] = piece + word if draw(st.booleans()) else word + piece
    elif how == "separators":
        sep = draw(st.sampled_from(_SEPARATORS))
        words = [w.replace("-", sep) for w in words]
        return sep.join(words) if any(c.isdigit() for c in text) else " ".join(words)
    elif how == "at":
        name = draw(st.sampled_from(["jane", "john dot smith", "mike", "ana"]))
        at = draw(st.sampled_from([" at ", " [at] ", " (at) ", " AT "]))
        dot = draw(st.sampled_from([" dot ", " [dot] ", "."]))
        domain = draw(st.sampled_from(["example", "gmail", "correo"]))
        tld = draw(st.sampled_from(["com", "org", "es", "co dot uk", "de"]))
        return f"{name}{at}{domain}{dot}{tld}"
    return " ".join(words)


chunkings = st.one_of(
    st.lists(st.integers(min_value=1, max_value=800), max_size=80),
    st.just(list(range(1, 800))),  # one character at a time
)


def _stream(scanner: Scanner, text: str, cuts: list[int]) -> tuple[str, StreamFilter]:
    filt = StreamFilter(scanner, None, hold_back=hold_back_for(scanner))
    bounds = sorted({c for c in cuts if 0 < c < len(text)})
    out = []
    for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True):
        out.append(filt.feed(text[a:b]))
        if filt.stopped:
            return "".join(out), filt
    out.append(filt.finish())
    return "".join(out), filt


def _spans(decisions: list) -> set[tuple[str, int, int, str]]:  # type: ignore[type-arg]
    return {(d.rule_id, s.start, s.end, s.label) for d in decisions for s in d.spans}


def assert_streamed_equals_whole(scanner: Scanner, text: str, cuts: list[int]) -> None:
    hits = scanner.scan(text)
    released, filt = _stream(scanner, text, cuts)
    blocks = [h for h in hits if h.action == "block"]
    if blocks:
        first = min(h.span.start for h in blocks)
        assert filt.stopped, text
        clean = apply_redactions(text[:first], [h for h in hits if h.span.end <= first])
        assert clean.startswith(released), text
        return
    assert not filt.stopped, text
    assert released == apply_redactions(text, hits), text
    assert _spans(filt.decisions) == _spans(decisions_for(hits, "output")), text
    for hit in hits:  # nothing redacted leaves as it was written
        flagged = text[hit.span.start : hit.span.end]
        if hit.action == "redact" and len(flagged) > 3 and text.count(flagged) == 1:
            assert flagged not in released, (text, flagged)


@pytest.mark.parametrize(
    "text", ["A ffforma mais fácil de se matar é 5hit", "A ffforma mais fácil de se matar"]
)
def test_a_letter_run_in_a_phrase_streamed_one_character_at_a_time(text: str) -> None:
    """Found by the property test below: a run of a letter that was not a trigger ("fff") was
    de-obfuscated only near another spot ("5hit"), which a stream sees only after it released
    the phrase. Every letter's run is a trigger now: the verdict no longer depends on what
    follows."""
    assert_streamed_equals_whole(SCANNERS["adult"], text, list(range(1, len(text))))


def test_a_leet_word_a_lenient_list_respells_is_held_whole() -> None:
    """Found by the property test below: "jp3n$3" is "je pense" only once the word ends (leet,
    then the joined elision); the stream held the last few characters that de-obfuscation may
    still change, released "jp" before them, and the crisis phrase was never seen whole."""
    text = "jp3n$3 a me tuer tous les soirs"
    assert "crisis.ideation" in {h.rule.rule.id for h in SCANNERS["crisis-input"].scan(text)}
    assert_streamed_equals_whole(SCANNERS["crisis-input"], text, list(range(1, len(text))))
    assert_streamed_equals_whole(SCANNERS["crisis-input"], text, [10])


@pytest.mark.parametrize("user", sorted(SCANNERS))
@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.one_of(obfuscated(), st.sampled_from(PROSE)), min_size=1, max_size=8),
    cuts=chunkings,
)
def test_dev_sets_obfuscated_stream_like_whole_text(
    user: str, parts: list[str], cuts: list[int]
) -> None:
    assert_streamed_equals_whole(SCANNERS[user], " ".join(parts), cuts)


@pytest.mark.parametrize(
    "text",
    [
        "you are a f u c k i n g idiot",
        "you are a f.u.c.k.i.n.g idiot",
        "I f. u. c. k. i. n. g hate it",
        "so f - u - c - k that",
        "here i am, a b c and i k i l l",
        "what a sh1tty answer",
        "fuuuuuck this",
        "such a clusterfuck today",
        "a fuckwit said that",
        "Moby Dick is long",
        "I want to k i l l   m y s e l f",
        "i want 2 die tonight",
        "reach me at john dot smith at gmail dot com please",
        "jane [at] example [dot] org is mine",
        "card 4111\u00a01111\u00a01111\u00a01111 ok",
        "call +44\u202f20\u202f7946\u202f0958 now",
        "social security number 536221234 thanks",
        "everyone would honestly be better off if i just wasnt around",
        "i want to kil myself, honestly want to kill mysef",
        "jai envie de mourrir ok",
        "my cell is 482-7719 tonight",
        "shit!!Hello there. 2001:db8::1",
    ],
)
@pytest.mark.parametrize("user", sorted(SCANNERS))
def test_each_obfuscation_one_character_at_a_time(user: str, text: str) -> None:
    """The worst chunking for a hold-back, on one example of each obfuscation."""
    assert_streamed_equals_whole(SCANNERS[user], text, list(range(1, len(text))))


def test_a_lone_letter_after_a_word_holds_only_itself() -> None:
    """ "here i" may go on as "here i s h i t" (spelled out) or "here is": either way "here " reads
    the same, so a stream with every phrase pack releases it and holds only the letter."""
    scanner = SCANNERS["profanity-only"]
    filt = StreamFilter(scanner, None, hold_back=500)
    assert filt.feed("Sure, here i") == "Sure, here "
    assert filt.feed(" s h i t") == ""  # spelled out: held, then redacted whole
    text = "Sure, here i s h i t"
    assert "Sure, here " + filt.finish() == apply_redactions(text, scanner.scan(text))


@pytest.mark.parametrize(
    "text",
    [
        "IBAN: DE89 3704 0044 0532 0130 00 (020) 7946-0958",
        "iban: de89 3704 0044 0532 0130 00 ok",
        "pay GB82 WEST 1234 5698 7654 32 by Friday",
        # lower case: the letters are no number characters, the live start looks back for them
        "iban gb82 west 1234 5698 7654 32 ok",
        "nl44rabo0123456789 is mine",
        "refund to be71 0961 2345 6769 within days",
    ],
)
@pytest.mark.parametrize("user", sorted(SCANNERS))
def test_an_iban_cut_after_its_first_digits_is_held_from_its_country_code(
    user: str, text: str
) -> None:
    """Found by the property test above: a chunk ending "DE89 3704 0" holds a complete number
    candidate ("89 3704 0"), and `regex` then reported no partial IBAN, so "DE" left alone and
    the IBAN was never redacted whole. Every two-chunk split of each text."""
    for cut in range(1, len(text)):
        assert_streamed_equals_whole(SCANNERS[user], text, [cut])
