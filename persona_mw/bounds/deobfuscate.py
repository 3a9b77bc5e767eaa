"""De-obfuscation for phrase matching: leetspeak, spaced-out and stretched letters.

Folding (:mod:`persona_mw.bounds.normalise`) the whole text this way would cost a pass in
Python per character; instead the phrase index finds the few spots where something could be
hidden (a digit or symbol touching a letter, three single letters in a row, three equal letters)
and matches again on de-obfuscated views of the text around them only. Every rule below looks at
most :data:`FOLD_REACH` characters around a character, so a stream sees the same views as the
whole text.
"""

from __future__ import annotations

import re
import string

from .normalise import Folded, fold

__all__ = [
    "FOLD_REACH",
    "LEET_SPOT_KEYS",
    "SPOT_KEYS",
    "WORD_LETTERS",
    "leet_plausible",
    "suspect_spots",
    "unmask",
]

#: How far (in original characters) one character's folding can depend on its neighbours: a
#: leet run is at most 4 symbols long and decided by the letters on either side of it; a space
#: between single letters by the two characters on either side. The stream hold-back reads it.
FOLD_REACH = 6

_LEET = {
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "€": "e",
    "©": "c",
    "¡": "i",
    "+": "t",
}
#: Symbols that may stand for a letter only between two letters ("sh!t"; not "great!", not
#: Spanish "¡pendejo!").
_INNER_ONLY = frozenset("!|+¡")
#: A digit written as a word between words ("i want 2 die").
_DIGIT_WORDS = {"2": "to", "4": "for"}
_LEET_RUN = 4
#: Letters whose stretched runs ("fuuuck", "killlll", "ffforma") are trigger keys of the phrase
#: automaton: every letter. (An earlier version left out t, s, r, h, l, d to keep the automaton on
#: its root; on the DFA it costs nothing measurable, 2026-12-03, benchmarks/bench_detection.py.
#: Leaving letters out made the whole-text verdict depend on another spot nearby, which a
#: stream cannot know in advance: a stretched phrase could be released before the spot came.)
_STRETCHED = string.ascii_lowercase
_LEET_DIGITS = "".join(c for c in _LEET if c.isdigit())
_L = string.ascii_lowercase
#: Pairs of single letters that are ordinary writing, not spelling out: "I'm", "I'd", "e.g.",
#: "i.e.", "U.S.".
_ORDINARY_PAIRS = frozenset({"i m", "i d", "e g", "i e", "u s"})
#: The widest gap between spelled-out letters, in separators: "f u c k", "f. u. c. k.", "f - u".
_GAP = 3
#: Letters that are words of their own in our languages ("a", "I", Spanish "y", "o", "e", "u").
WORD_LETTERS = frozenset("aeiouy")
#: The phrase automaton's own triggers (keys with no owner), found in the same pass as the
#: phrases: three equal letters; two single letters in a row (" k i ", so "k i l l"); a digit
#: word ("want 2 die"). All but the first start at a word boundary, which keeps them nearly
#: free. (Keys for three single letters would be 17,576: they made building a scanner, once per
#: policy and user shape, three times slower.)
SPOT_KEYS: tuple[str, ...] = (
    tuple(c * 3 for c in _STRETCHED)
    + tuple(
        f" {a}{gap}{b} "
        for a in _L
        for b in _L
        for gap in (" ", "  ", "   ")
        if f"{a} {b}" not in _ORDINARY_PAIRS
    )
    + tuple(f" 2 {a}" for a in _L)
)
#: Leet-digit triggers, a leet digit beside a letter ("k1ll", "sch3isse", "4ss", "a55"):
#: nearly every leet word has one, and digits are rare enough in text to keep them cheap. The
#: word around is checked with :func:`leet_plausible` before it is de-obfuscated. A digit after
#: the letters too: :func:`_unleet` reads "a55" as "ass" in any window, so a word like it must
#: open a window of its own, or its verdict would depend on another spot further on (which a
#: stream cannot wait for; the property test found "ass555-…" hit only with one after it).
LEET_SPOT_KEYS: tuple[str, ...] = tuple(f"{d}{a}" for a in _L for d in _LEET_DIGITS) + tuple(
    f"{a}{d}" for a in _L for d in _LEET_DIGITS
)
#: Leet symbols looked for in the original text (they fold to spaces): one find each.
_SYMBOLS = "$@!"
_NON_ASCII_LEET = re.compile(r"[^\W\d_][@$!|+€©¡]|[@$!|+€©¡][^\W\d_]")


def suspect_spots(text: str) -> list[int]:
    """Offsets where a leet symbol touches a letter ("a$$", "sh!t", "put@"): symbols fold to
    spaces, so the phrase automaton cannot see them. One C-level find per symbol on ASCII text.
    (Leet digits, stretched and spaced-out letters are :data:`SPOT_KEYS`.)"""
    if not text.isascii():
        spots = []
        for m in _NON_ASCII_LEET.finditer(text):
            at = m.start() + m.group()[0].isalpha()
            if _leet_spot(text, at):
                spots.append(at)
        return spots
    spots = []
    for symbol in _SYMBOLS:
        at = text.find(symbol)
        while at != -1:
            if (
                (at > 0 and text[at - 1].isalpha())
                or (at + 1 < len(text) and text[at + 1].isalpha())
            ) and _leet_spot(text, at):
                spots.append(at)
            at = text.find(symbol, at + 1)
    return spots


def _leet_spot(text: str, at: int) -> bool:
    # "great!" is punctuation: "!", "|" and "+" stand for letters only inside a word, in a run
    # of leet characters with a letter either side ("sh!t", "shit!!hello"), as _unleet reads
    # them: a spot that _unleet would read but this test missed made the verdict depend on
    # another spot's window further on (the property test found "shit!!Hello ... db8")
    if text[at] in _INNER_ONLY:
        i, j = at, at + 1
        while i > 0 and text[i - 1] in _LEET:
            i -= 1
        while j < len(text) and text[j] in _LEET:
            j += 1
        if not (i > 0 and j < len(text) and text[i - 1].isalpha() and text[j].isalpha()):
            return False
    return leet_plausible(text, at)


def leet_plausible(text: str, at: int) -> bool:
    """Whether the word around ``at`` may be leetspeak: not a code or number with digits no
    leet speaker uses ("gb82", "h264"), not mostly digits ("10am"), not an e-mail address."""
    lo = at
    while lo > 0 and at - lo < 24 and (text[lo - 1].isalnum() or text[lo - 1] in _LEET):
        lo -= 1
    hi = at
    while hi < len(text) and hi - at < 24 and (text[hi].isalnum() or text[hi] in _LEET):
        hi += 1
    word = text[lo:hi]
    digits = sum(c.isdigit() for c in word)
    if word in _DIGIT_WORDS:
        return True
    if digits * 2 > len(word) or any(c.isdigit() and c not in _LEET for c in word):
        return False
    # an e-mail address has its local part before the "@": "@sshole." is leet before a full stop
    return not ("@" in word[1:] and hi < len(text) and text[hi] == ".")


def unmask(text: str) -> list[Folded]:
    """De-obfuscated views of ``text`` (a short stretch around a suspect spot), folded, with
    offsets into ``text``: leet symbols inside words become letters, a digit word between words
    becomes the word, single letters separated by up to three spaces, dots or dashes are joined
    ("f u c k", "f. u. c. k."), runs of spaces become one, and runs of three or more equal
    letters become two (one view) and one (the other): "killlll" is "kill", "fuuuuck" is
    "fuck". A spelled-out word often follows a one-letter word ("a f u c k i n g idiot",
    "i k i l l"): when a joined run begins with a letter that is a word of its own in our
    languages (a, e, i, o, u, y), further views keep that letter apart."""
    base = fold(_unleet(text))
    folded = base.text
    m = len(folded)
    starts = base.starts or range(m)
    ends = base.ends or range(1, m + 1)
    alnum = [c.isalnum() for c in folded]
    single = [
        alnum[k] and (k == 0 or folded[k - 1] == " ") and (k + 1 == m or folded[k + 1] == " ")
        for k in range(m)
    ]
    # gaps of one to three spaces between two single letters are joined; a gap after a letter
    # that begins a joined run and is a word of its own may be kept instead, and so may the gap
    # before the last letter of a run of five or more when that letter is a word of its own:
    # "f.o.d.a.s.e o patch" is "fodase o", not "fodaseo"
    joined = [False] * m
    splittable = [False] * m
    ending = [False] * m
    run = 0  # letters of the joined run being read
    last: tuple[int, int] | None = None  # its last gap

    def end_run() -> None:
        if last is not None and run >= 5 and folded[last[1]] in WORD_LETTERS:
            for j in range(*last):
                ending[j] = True

    k = 0
    while k < m:
        if folded[k] != " ":
            k += 1
            continue
        q = k
        while q < m and folded[q] == " ":
            q += 1
        if k > 0 and q < m and q - k <= _GAP and single[k - 1] and single[q]:
            first = k - 1 == 0 or not joined[k - 2]
            if first:
                end_run()
            run, last = (2 if first else run + 1), (k, q)
            for j in range(k, q):
                joined[j] = True
                splittable[j] = first and folded[k - 1] in WORD_LETTERS
        k = q
    end_run()
    views = []
    modes = [0] + ([1] if any(splittable) else []) + ([2] if any(ending) else [])
    for split in modes:
        chars: list[str] = []
        o_starts: list[int] = []
        o_ends: list[int] = []
        for k, char in enumerate(folded):
            if char == " ":
                if chars and chars[-1] == " ":
                    continue
                if (
                    joined[k]
                    and not (split == 1 and splittable[k])
                    and not (split == 2 and ending[k])
                ):
                    continue  # "k i l l" -> "kill"
            elif (
                single[k]
                and char in _DIGIT_WORDS
                and 1 < k < m - 2
                and folded[k - 2].isalpha()
                and folded[k + 2].isalpha()
            ):
                for c in _DIGIT_WORDS[char]:
                    chars.append(c)
                    o_starts.append(starts[k])
                    o_ends.append(ends[k])
                continue
            chars.append(char)
            o_starts.append(starts[k])
            o_ends.append(ends[k])
        runs = _run_positions(chars)
        for keep in (2, 1):
            view = [
                k
                for k, run in enumerate(runs)
                if not (run >= keep and chars[k].isalpha() and _run_length(chars, k) >= 3)
            ]
            views.append(
                Folded(
                    "".join(chars[k] for k in view),
                    tuple(o_starts[k] for k in view),
                    tuple(o_ends[k] for k in view),
                )
            )
    return views


def _unleet(text: str) -> str:
    """Leet symbols to letters, one to one: a run of at most four touching a letter, in a word
    that :func:`leet_plausible` admits. (The same test decides where a symbol is a spot: a
    symbol read as a letter only when another spot's window covers it would make the verdict
    depend on text that comes later, which a stream cannot wait for.)"""
    chars = list(text)
    n = len(chars)
    i = 0
    while i < n:
        if chars[i] not in _LEET:
            i += 1
            continue
        j = i
        while j < n and chars[j] in _LEET:
            j += 1
        before = i > 0 and chars[i - 1].isalpha()
        after = j < n and chars[j].isalpha()
        if j - i <= _LEET_RUN and (before or after) and leet_plausible(text, i):
            for k in range(i, j):
                if (before and after) or chars[k] not in _INNER_ONLY:
                    chars[k] = _LEET[chars[k]]
        elif j - i == 1 and chars[i].isdigit() and _spelled_out(text, i):
            chars[i] = _LEET[chars[i]]  # "p 0 r n o": a leet digit among spelled-out letters
        i = j
    return "".join(chars)


def _spelled_out(text: str, i: int) -> bool:
    """Whether ``text[i]`` stands alone, one space from a single letter that stands alone
    ("p 0 r", "s 3 x"): a letter of a word spelled out, not a number. Looks three characters
    either side (within :data:`FOLD_REACH`)."""
    n = len(text)

    def alone(k: int) -> bool:
        return (k == 0 or text[k - 1].isspace()) and (k + 1 == n or text[k + 1].isspace())

    if not alone(i):
        return False
    left = i >= 2 and text[i - 1] == " " and text[i - 2].isalpha() and alone(i - 2)
    right = i + 2 < n and text[i + 1] == " " and text[i + 2].isalpha() and alone(i + 2)
    return left or right


def _run_positions(chars: list[str]) -> list[int]:
    """For each character, how many equal characters come right before it."""
    out = []
    run = 0
    for k, char in enumerate(chars):
        run = run + 1 if k and chars[k - 1] == char else 0
        out.append(run)
    return out


def _run_length(chars: list[str], k: int) -> int:
    lo, hi = k, k
    while lo > 0 and chars[lo - 1] == chars[k]:
        lo -= 1
    while hi + 1 < len(chars) and chars[hi + 1] == chars[k]:
        hi += 1
    return hi - lo + 1
