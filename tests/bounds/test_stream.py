"""The stream filter: nothing a rule would block or redact ever leaves, whatever the chunking,
and the streamed result equals the whole-text one (property test)."""

from __future__ import annotations

import unicodedata

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
from persona_mw.bounds.scan import hold_back_for
from persona_mw.profile import Profile


def _scorer(sentence: str) -> float:
    return 0.95 if "darling" in sentence.lower() else 0.1


RULES: list[dict] = [  # type: ignore[type-arg]
    {
        "id": "fruit",
        "tier": 2,
        "stage": "output",
        "detector": {"kind": "phrases", "phrases": ["forbidden fruit"]},
        "message": "withheld",
    },
    {
        "id": "codes",
        "tier": 2,
        "stage": "output",
        "detector": {"kind": "regex", "pattern": r"\bcode-[0-9]{3,8}\b", "max_len": 13},
        "action": "redact",
        "replacement": "[code]",
    },
    {
        "id": "pet-names",
        "tier": 2,
        "stage": "output",
        "detector": {"kind": "relationship", "threshold": 0.9, "max_sentence": 60},
        "action": "redact",
        "replacement": "",
    },
]
POLICY = policy_from_dict({"packs": ["pii", "profanity"], "rules": RULES})
EFFECTIVE = resolve(POLICY, Profile(user_id="u"), scorer=_scorer)
SCANNER = EFFECTIVE.output
HOLD_BACK = hold_back_for(SCANNER)

FRAGMENTS = [
    "Hello there. ",
    "shit",
    "classic ",
    "assassin ",
    "ass",
    " ",
    "\n\n",
    "Scunthorpe",
    "ada@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "192.168.1.20",
    "2001:db8::1",
    "fe80::1",
    "12:30",
    "555-123-4567",
    "123-45-6789",
    "(0)",
    "x@",
    "@y.org",
    "code-12345",
    "code-1",
    "forbidden",
    "forbidden fruit",
    "fruit",
    "fu\u200bck",
    "ｓｈｉｔ",
    "café",
    "e\u0301",
    "darling, ",
    "I will miss you darling. ",
    ".",
    "!",
    ",",
    "-",
    "ü",
]


def stream(text: str, cuts: list[int]) -> tuple[str, StreamFilter]:
    filt = StreamFilter(SCANNER, None, hold_back=HOLD_BACK)
    bounds = sorted({c for c in cuts if 0 < c < len(text)})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    out = []
    for piece in pieces:
        out.append(filt.feed(piece))
        if filt.stopped:
            return "".join(out), filt
    out.append(filt.finish())
    return "".join(out), filt


def spans_by_rule(decisions: list) -> dict[str, set[tuple[int, int, str]]]:  # type: ignore[type-arg]
    grouped: dict[str, set[tuple[int, int, str]]] = {}
    for d in decisions:
        grouped.setdefault(d.rule_id, set()).update((s.start, s.end, s.label) for s in d.spans)
    return grouped


#: Characters that render as nothing; the first two also stand in for other "format" ones.
INVISIBLE = ["\u200b", "\u2060", "\u200c", "\u200d", "\ufeff", "\u00ad"]


def assert_stream_matches_whole_text(text: str, cuts: list[int]) -> None:
    hits = SCANNER.scan(text)
    released, filt = stream(text, cuts)
    blocks = [h for h in hits if h.action == "block"]
    if blocks:
        assert filt.stopped
        first = min(h.span.start for h in blocks)
        # what left before the stop is clean, whole-text-redacted text from before the block
        assert apply_redactions(text[:first], [h for h in hits if h.span.end <= first]).startswith(
            released
        )
    else:
        assert not filt.stopped
        assert released == apply_redactions(text, hits)
        assert spans_by_rule(filt.decisions) == spans_by_rule(decisions_for(hits, "output"))


chunkings = st.one_of(
    st.lists(st.integers(min_value=1, max_value=1200), max_size=60),
    st.just(list(range(1, 1200))),  # one character at a time
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=40), cuts=chunkings)
def test_streamed_equals_whole_text(parts: list[str], cuts: list[int]) -> None:
    assert_stream_matches_whole_text("".join(parts), cuts)


def test_symbols_that_join_words_read_alike_with_and_without_a_later_spot() -> None:
    """Found by the property test above: "!!" between two letters reads as letters only where
    another spot ("db8") opened a window over it, so the whole text redacted "shit!!Hello" and
    the stream, which saw no spot there yet, "shit" alone."""
    text = "shit!!Hello there. 2001:db8::1"
    assert_stream_matches_whole_text(text, list(range(1, len(text))))
    assert apply_redactions(text, SCANNER.scan(text)).startswith("**** there.")


def test_a_word_found_again_from_inside_it_is_one_finding() -> None:
    """Found by the property test above: the whole text (with a leet-like spot further on,
    which opens a de-obfuscation window cut inside the first word) reported the compound once
    at 0 and again at 1; the stream reported it once. Same redaction, different decisions."""
    text = "shitshitshit.ScunthorpeHello there. 2001:db8::1Hello there. "
    assert [(h.span.start, h.span.end) for h in SCANNER.scan(text)] == [(0, 12)]
    assert_stream_matches_whole_text(text, list(range(1, len(text))))


def insert_invisible(text: str, insertions: list[tuple[int, str, int]]) -> str:
    """``text`` with ``count`` copies of ``char`` at each position (not before a combining
    mark: an invisible character there would take the mark with it, on any path)."""
    out = list(text)
    for position, char, count in sorted(insertions, reverse=True):
        position %= len(text) + 1
        if position < len(text) and unicodedata.combining(text[position]):
            continue
        out.insert(position, char * count)
    return "".join(out)


def phrase_rules_fired(text: str) -> set[str]:
    return {h.rule.rule.id for h in SCANNER.scan(text) if h.detector == "phrases"}


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=20),
    insertions=st.lists(
        st.tuples(st.integers(0, 2000), st.sampled_from(INVISIBLE), st.integers(1, 40)),
        max_size=30,
    ),
    every_gap=st.tuples(st.sampled_from(INVISIBLE), st.integers(0, 16)),
    cuts=chunkings,
)
def test_invisible_characters_anywhere_change_no_verdict(
    parts: list[str],
    insertions: list[tuple[int, str, int]],
    every_gap: tuple[str, int],
    cuts: list[int],
) -> None:
    """Issue 12, finding 5: invisible characters inside blocked words (at random places, and
    the same number between every two characters), with any chunking. Phrase rules see
    through them, and the stream equals the whole text."""
    plain = "".join(parts)
    char, per_gap = every_gap
    padded = [(i, char, per_gap) for i in range(1, len(plain))] if per_gap else []
    text = insert_invisible(plain, insertions + padded)
    assert phrase_rules_fired(text) == phrase_rules_fired(plain)
    assert_stream_matches_whole_text(text, cuts)


@pytest.mark.parametrize(
    "plain",
    [
        "ass555-123-45672001:db8::1Hello there. ",  # found by the property test above
        "a$$",  # a leet symbol beside a letter, a zero-width space between them
        "sh!t happens",
    ],
)
def test_a_zero_width_space_between_every_character_changes_no_verdict(plain: str) -> None:
    """The de-obfuscation reads neighbours in the original text (a leet symbol beside a
    letter, how far a window reaches): an invisible character between them hid the word. The
    phrase index now reads the visible characters and maps spans back over the invisible."""
    text = "\u200b".join(plain)
    assert phrase_rules_fired(text) == phrase_rules_fired(plain) == {"profanity"}
    assert_stream_matches_whole_text(text, list(range(1, len(text))))
    assert_stream_matches_whole_text(text, [])


@pytest.mark.parametrize("per_gap", [1, 3, 12, 40])
@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_zero_width_padding_does_not_push_a_phrase_out_of_the_hold_back(
    per_gap: int, chunk: int
) -> None:
    """The regression: zero-width spaces between the letters of a blocked phrase made it
    longer than the hold-back, so a stream released its first letters."""
    phrase = "\u200b".join("forbidden fruit").replace("\u200b", "\u200b" * per_gap)
    text = "Here is what you asked about: " + phrase + " and the rest of the reply."
    assert len(phrase) > HOLD_BACK or per_gap < 12
    released, filt = stream(text, list(range(chunk, len(text), chunk)))
    assert filt.stopped
    assert len(released) <= text.index(phrase) and text.startswith(released)


@pytest.mark.parametrize(
    "phrase", ["forbidden fruit", "fu\u200bck", "ada@example.com", "4111 1111 1111 1111"]
)
def test_flagged_text_split_at_every_position_never_leaks(phrase: str) -> None:
    """The flagged text split in two at each position (and one character at a time)."""
    text = (
        "Some preamble long enough to release a little. " * 4
        + phrase
        + " and then more text follows here."
    )
    start = text.index(phrase)
    for cut in [*range(start, start + len(phrase) + 1), -1]:
        cuts = list(range(1, len(text))) if cut == -1 else [cut]
        released, _filt = stream(text, cuts)
        assert phrase not in released
        assert "fruit" not in released[start:]


def test_block_mid_stream_stops_and_marks_the_call(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    text = "x" * 300 + " the forbidden fruit is sweet " + "y" * 300
    filt = StreamFilter(SCANNER, ctx, hold_back=HOLD_BACK)
    released = ""
    for i in range(0, len(text), 7):
        released += filt.feed(text[i : i + 7])
        if filt.stopped:
            break
    assert filt.stopped and ctx.outcome == "filtered"
    assert text[: text.index("forbidden")].startswith(released)
    assert filt.feed("more") == "" and filt.finish() == ""
    assert [(d.rule_id, d.action, d.message) for d in ctx.decisions] == [
        ("fruit", "block", "withheld")
    ]
    assert ctx.decisions[0].spans[0].start == text.index("forbidden")


def test_hold_back_cap_is_the_longest_need_plus_the_margin() -> None:
    assert SCANNER.max_span + 8 == HOLD_BACK
    assert SCANNER.max_span <= HOLD_BACK <= SCANNER.max_span + 64


#: The same rules without the sentence rule, which holds the sentence being written.
PLAIN = resolve(
    policy_from_dict(
        {
            "packs": ["pii", "profanity"],
            "rules": [r for r in RULES if r["detector"]["kind"] != "relationship"],
        }
    ),
    Profile(user_id="u"),
).output


@pytest.mark.parametrize(
    ("chunks", "released"),
    [
        # the word being written may be an e-mail's local part or a phrase's first word
        (["Hello", " there", ","], ["", "Hello ", "there"]),
        # a word and the space after it wait for the next word: "is at example dot com" would
        # be a spelled-out e-mail address
        (["The answer is ", "42."], ["The answer ", "is "]),
        # a phrase's prefix is held until it can no longer become the phrase
        (
            ["the forbid", "den fr", "uit", "s are", " ripe"],
            ["the ", "", "", "forbidden fruits ", "are "],
        ),
        (["the forbidden fruit", " is sweet"], ["the ", ""]),
        # a digit run is held while it may still become a phone or card number
        (["room 555", "-1234", " now please"], ["room ", "", "555-1234 now "]),
        # after a phone word, seven digits are a local phone number: redacted whole
        (["call 555", "-1234", " now please"], ["call ", "", "[phone removed] now "]),
        # the regex rule: a complete match held while one more digit could extend it
        (["a code-123", "4", " then more"], ["a ", "", "[code] then "]),
    ],
)
def test_releases_everything_but_the_live_suffix(chunks: list[str], released: list[str]) -> None:
    filt = StreamFilter(PLAIN, None, hold_back=hold_back_for(PLAIN))
    assert [filt.feed(chunk) for chunk in chunks] == released
    out = "".join(released) + filt.finish()
    whole = PLAIN.scan("".join(chunks))
    if filt.stopped:
        assert "forbidden fruit" in "".join(chunks) and out == "the "
    else:
        assert out == apply_redactions("".join(chunks), whole)


def test_prose_is_released_within_one_chunk() -> None:
    """Ordinary prose in token-like chunks (a leading space, a few letters): each chunk is out
    once the next one has arrived; only the word being written waits."""
    text = "Most people need seven to nine hours of sleep, and teenagers need a little more. " * 5
    chunks = [text[i : i + 4] for i in range(0, len(text), 4)]
    filt = StreamFilter(PLAIN, None, hold_back=hold_back_for(PLAIN))
    received = released = 0
    for chunk in chunks:
        previous = received
        received += len(chunk)
        released += len(filt.feed(chunk))
        assert released >= previous - 1 - len("teenagers")
        assert filt.held == received - released
    assert released + len(filt.finish()) == len(text)


def test_cap_reached_behaves_as_a_fixed_hold_back() -> None:
    """An endless digit run stays live; the cap releases it as the fixed hold-back did (cut at
    the cap, moved back to a candidate boundary), never holding more than the cap plus a chunk,
    and the result still equals the whole text's."""
    text = "Digits: " + "1234567890" * 60 + " end."
    filt = StreamFilter(PLAIN, None, hold_back=hold_back_for(PLAIN))
    out = []
    for i in range(0, len(text), 3):
        out.append(filt.feed(text[i : i + 3]))
        # the cut moves back to the start of the 41-character candidate it fell in
        assert filt.held <= filt.hold_back + 3 + 41
    assert sum(map(len, out)) > len(text) - filt.hold_back - 50  # it did flow
    assert "".join(out) + filt.finish() == apply_redactions(text, PLAIN.scan(text))


def test_output_notices_once_per_rule(make_ctx) -> None:  # type: ignore[no-untyped-def]
    policy = policy_from_dict(
        {
            "rules": [
                {
                    "id": "med",
                    "tier": 2,
                    "stage": "output",
                    "detector": {"kind": "phrases", "phrases": ["dosage"]},
                    "action": "append",
                    "message": "Not medical advice.",
                }
            ]
        }
    )
    ctx = make_ctx()
    scanner = resolve(policy, ctx.profile).output
    filt = StreamFilter(scanner, ctx, hold_back=hold_back_for(scanner))
    out = filt.feed("The dosage depends; ask about dosage.") + filt.finish()
    assert out == "The dosage depends; ask about dosage."
    assert [(n.text, n.position, n.source) for n in ctx.notices] == [
        ("Not medical advice.", "after", "med")
    ]


def test_no_output_rules_means_no_hold_back() -> None:
    scanner = resolve(
        policy_from_dict({"packs": ["crisis"]}).model_copy(update={"rules": ()}),
        Profile(user_id="u"),
    ).output
    filt = StreamFilter(scanner, None, hold_back=hold_back_for(scanner))
    assert [filt.feed("a"), filt.feed("bc"), filt.finish()] == ["a", "bc", ""]
