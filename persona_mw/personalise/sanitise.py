"""Make user-written text safe to quote inside a prompt as data.

What the user wrote (own rules, self-description, name, topics) goes into the prompt, but only
as quoted data. Before quoting it we remove what could hide or fake structure:

- control characters, and invisible ones: zero-width spaces and joiners, bidi overrides and
  isolates, Unicode tag characters (U+E0000 block), variation selectors, private-use and
  unassigned code points, Hangul fillers;
- compatibility forms (NFKC): fullwidth brackets and bars (U+FF1C, U+FF5C), mathematical
  bold letters, ligatures become their plain forms, so the checks below see them;
- angle brackets become single guillemets (U+2039, U+203A), so no tag (ours: ``<user-data>``,
  ``<persona-mw:...>``, or a chat template's ``<|im_start|>``) can be opened or closed from
  inside the data;
- runs of three backticks (a fence) become ``'''``;
- spaces are collapsed, at most one blank line is kept, the ends are trimmed;
- the result is cut to ``max_chars`` (ending in ``" [cut]"``).

The function is idempotent: sanitising twice gives the same text. It does not try to recognise
hostile *meaning* ("ignore previous instructions" passes through unchanged): the defence is that
the text is quoted and labelled as data below the rules that take precedence, not that we can
spot every attack. Homoglyphs from other scripts (a Cyrillic i for a Latin one) also pass through.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["CUT_MARK", "sanitise_user_text"]

#: Appended when text is cut to its length limit.
CUT_MARK = " [cut]"

_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})
# Invisible code points whose category is not Cf: variation selectors, the combining grapheme
# joiner, Hangul fillers, the Mongolian free variation selectors, the braille blank.
_INVISIBLE = frozenset(
    [
        *(0x034F, 0x115F, 0x1160, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164, 0xFFA0),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)
_NEWLINES = frozenset("\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# Printable ASCII and newlines: nothing to drop or normalise (the common case, ~10x faster).
_PLAIN = re.compile(r"[\x20-\x7e\n]*")
_BLANK_LINES = re.compile(r"\n{3,}")


def _visible(text: str) -> str:
    out = []
    for char in text:
        if char in _NEWLINES:
            out.append("\n")
        elif char == "\t":
            out.append(" ")
        elif ord(char) in _INVISIBLE or unicodedata.category(char) in _DROP_CATEGORIES:
            continue
        else:
            out.append(char)
    return "".join(out)


def sanitise_user_text(text: str, *, max_chars: int | None = None) -> str:
    """``text`` with invisible and control characters removed, NFKC-normalised, tags and fences
    neutralised, whitespace tidied and cut to ``max_chars`` (see the module docstring).

    Idempotent: ``sanitise_user_text(sanitise_user_text(t)) == sanitise_user_text(t)``.
    """
    if max_chars is not None and max_chars <= len(CUT_MARK):
        raise ValueError(f"max_chars must be more than {len(CUT_MARK)}, got {max_chars}")
    if max_chars is not None:
        # Work on a prefix: a 2,000-character field should not cost a full pass to keep 500.
        # Text that tidying shrinks below a quarter (a whitespace flood) just ends up shorter.
        text = text[: max_chars * 4]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not _PLAIN.fullmatch(text):
        # Strip, normalise, strip, normalise: NFKC can turn a visible compatibility character
        # into one we drop, and dropping can leave a sequence NFKC would change; this settles.
        text = _visible(unicodedata.normalize("NFKC", _visible(text)))
        text = unicodedata.normalize("NFKC", text)
    text = text.replace("<", "\u2039").replace(">", "\u203a").replace("```", "'''")
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    text = text.strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - len(CUT_MARK)].rstrip() + CUT_MARK
    return text
