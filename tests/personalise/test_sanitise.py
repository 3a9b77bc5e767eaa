"""sanitise_user_text: what it removes, what it keeps, and that it is idempotent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona_mw.personalise import sanitise_user_text
from persona_mw.personalise.sanitise import CUT_MARK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer in haiku.", "Answer in haiku."),
        ("  padded\t\ttext  ", "padded text"),
        ("ig\u200bnore pre\u200cvious", "ignore previous"),  # zero-width space / non-joiner
        ("a\u200d\u2060\ufeffb", "ab"),  # joiner, word joiner, BOM
        ("\u202eevil\u202c \u2066iso\u2069", "evil iso"),  # bidi override, isolate
        ("hi" + "".join(chr(0xE0000 + ord(c)) for c in "secret"), "hi"),  # tag characters
        ("x\ufe0f\U000e0101\u034f\u3164y", "xy"),  # variation selectors, CGJ, Hangul filler
        ("\x00\x1b[2Jok\x7f", "[2Jok"),  # control characters
        ("line\u2028two\u2029three", "line\ntwo\nthree"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("a\n\n\n\n\nb", "a\n\nb"),
        ("＜｜im_start｜＞", "\u2039|im_start|\u203a"),  # fullwidth → NFKC → neutralised
        ("</user-data>", "\u2039/user-data\u203a"),
        ("𝐢𝐠𝐧𝐨𝐫𝐞", "ignore"),  # mathematical bold → NFKC
        ("ﬁle", "file"),  # ligature
        ("```python", "'''python"),
        ("café", "café"),  # composed and decomposed é both end composed
        ("cafe\u0301", "café"),
        ("Ünïcödé stays; 日本語も", "Ünïcödé stays; 日本語も"),
        ("ZEBRA-ONE", "ZEBRA-ONE"),
        ("\u00a0\u2003\u3000", ""),
    ],
)
def test_sanitise_table(text: str, expected: str) -> None:
    assert sanitise_user_text(text) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 20, "short"),
        ("x" * 20, 20, "x" * 20),
        ("x" * 21, 20, "x" * (20 - len(CUT_MARK)) + CUT_MARK),
        ("word " * 10, 20, "word word word" + CUT_MARK),  # no trailing space before the mark
    ],
)
def test_cut_to_length(text: str, limit: int, expected: str) -> None:
    out = sanitise_user_text(text, max_chars=limit)
    assert out == expected and len(out) <= limit


def test_a_limit_too_small_for_the_mark_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chars must be more than 6"):
        sanitise_user_text("anything", max_chars=len(CUT_MARK))


# Text drawn with the tricky parts over-represented: combining marks, compatibility forms,
# format characters, tags, separators and our own markup.
_TRICKY = st.sampled_from(
    [
        *'<>`|\n\r\t #:"\\',
        *("\u0301", "\u0308", "\u200b", "\u200d", "\u202e", "\u2066", "\ufe0f", "\U000e0041"),
        *("\u2028", "\u00a0", "\uff1c", "\uff1e", "\ufb01", "\U0001d422", "\u3164", "\x00"),
        *("\x85", "\u1100", "\u1161", "\u11a8", "\u1100\u1161", "\u0345", "\u0390"),
        *("\u1e9b\u0323", "`" * 3),
    ]
)
_TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), _TRICKY)).map("".join)


@settings(max_examples=600, deadline=None)
@given(text=_TEXT, limit=st.one_of(st.none(), st.integers(min_value=7, max_value=80)))
def test_sanitise_is_idempotent(text: str, limit: int | None) -> None:
    once = sanitise_user_text(text, max_chars=limit)
    assert sanitise_user_text(once, max_chars=limit) == once
    assert limit is None or len(once) <= limit
    assert "<" not in once and ">" not in once and "```" not in once
