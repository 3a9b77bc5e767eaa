"""E-mail addresses for the PII detector (:class:`~persona_mw.bounds.pii.PIIDetector`):
written (``jane@example.org``, non-ASCII local parts and domains, a full-width at sign) or spelled
out ("jane at example dot org", "jane [at] example [dot] org"), and where an address still being
written may begin (what a stream holds back).
"""

from __future__ import annotations

import re
import string

import regex

from ..types import Span
from .lookahead import LOOKAHEAD

__all__ = ["AT_SIGNS", "EMAIL_MAX", "email_live_start", "emails", "spelled_emails"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


AT_SIGNS = ("@", "\uff20", "\ufe6b")
_EMAIL_LOCAL = re.compile(r"[\w.%+\-']{1,64}\Z")
_EMAIL_DOMAIN = re.compile(
    r"[^\W_](?:[\w\-]{0,61}[^\W_])?(?:[.\uff0e][^\W_](?:[\w\-]{0,61}[^\W_])?){0,3}"
    r"[.\uff0e][^\W\d_]{2,24}(?![\w\-])"
)
#: Longest e-mail address we recognise as one hit (local part 64, domain 100).
EMAIL_MAX = 64 + 1 + 100
# Spelled-out addresses: "jane at example dot org", "jane [at] example [dot] org", and the words
# of the other languages: "joana arroba gmail ponto com ponto br", "luc arobase orange point fr",
# "marco chiocciola libero punto it", "jonas at web punkt de".
#: The spoken at sign in each language (es pt "arroba", fr "arobase", it "chiocciola").
_AT_WORDS = ("at", "arroba", "arobase", "chiocciola", "klammeraffe")
#: The spoken dot in each language (pt "ponto", es it "punto", fr "point", de "punkt").
_DOT_WORDS = ("dot", "ponto", "punto", "point", "punkt")
#: Lower case, and brackets to spaces: " AT ", "(arroba)", "[at]" ... all become " at ",
#: " arroba " (same length: offsets hold).
_AT_BYTES = bytes.maketrans(
    string.ascii_uppercase.encode() + b"[({<])}>", string.ascii_lowercase.encode() + b" " * 8
)
_AT_TOKENS = tuple(f" {word} ".encode() for word in _AT_WORDS)
_AT_WORD = "(?:" + "|".join(_AT_WORDS) + ")"
_DOT_WORD = "(?:" + "|".join(_DOT_WORDS) + ")"
_SPELLED_AT = re.compile(rf"(?i)[ \[\(\{{<]{_AT_WORD}[ \]\)\}}>]")
_WORD = r"[^\W_][\w\-]{0,62}"
_DOT = rf"(?:\s*[\[\(\{{<]\s*{_DOT_WORD}\s*[\]\)\}}>]\s*|\s+{_DOT_WORD}\s+|\.)"
_SPELLED_DOMAIN = re.compile(
    rf"(?i)\s*({_WORD}(?:{_DOT}{_WORD}){{0,3}}{_DOT}[a-z]{{2,24}})(?![\w\-])"
)
_SPELLED_LOCAL = re.compile(rf"(?i)({_WORD}(?:{_DOT}{_WORD}){{0,2}})\s*\Z")
_TLDS = _words(
    "com org net edu gov mil int info biz io co me ai app dev uk de fr es it pt br nl be at "
    "ch ie eu us ca au nz in jp cn ru pl se no dk fi cz mx ar cl za"
)
#: Every beginning of a spoken at or dot ("a", "arr", "chioc", "pon"): a word the stream may
#: still be writing.
_SPOKEN_PREFIXES = "|".join(
    sorted({w[:i] for w in (*_AT_WORDS, *_DOT_WORDS) for i in range(1, len(w) + 1)}, key=len)[::-1]
)
#: A spelled-out address being written: its local part, the at, and a domain that may still grow
#: (matched partially; a domain that could take one more "dot word" is held too).
_SPELLED_PARTIAL = regex.compile(
    rf"(?i){_WORD}(?:{_DOT}{_WORD}){{0,2}}\s*[ \[\(\{{<]{_AT_WORD}[ \]\)\}}>]\s*"
    rf"{_WORD}(?:{_DOT}{_WORD}){{0,4}}(?:{_DOT}[^\W_]?)?"
)
#: What may still extend a spelled-out domain: one more "dot word".
_DOT_GROW = regex.compile(rf"(?i){_DOT}[^\W_]?")
#: The spelled-out local part before an at that may still arrive: words, then only space or an
#: opening bracket and the start of a spoken at or dot.
_SPELLED_LOCAL_OPEN = regex.compile(
    rf"(?i)(?<![\w@]){_WORD}(?:{_DOT}{_WORD}){{0,2}}\s*[\[\(\{{<]?\s*(?:{_SPOKEN_PREFIXES})?\Z"
)
#: Besides letters and digits, what an e-mail address is made of (``_EMAIL_LOCAL``, the at
#: signs, full-width dots): the word being written may be one.
_EMAIL_PUNCT = frozenset("._%+-'_@\uff20\ufe6b\uff0e")

#: Words around a spoken at that make it prose ("look at this dot com bubble", "o preço da
#: arroba do boi"), in the six languages.
_PROSE_WORDS = _words(
    "look looking looked me us him her them it this that the a an my your our his their "
    "home work office school least most all once first last back here there where what "
    "o os as um uma da do das dos de no na nos em por para pra ao e "
    "el la los las un una del al en y lo "
    "le les une des du au aux et "
    "il lo gli di dal nel al e "
    "der die das den dem ein eine und im am zu"
)
#: A spoken dot ("ponto", "punto", "point") followed by a word that is a preposition there and a
#: top-level domain too, then by more words: prose ("no ponto de ônibus", "au point de départ").
_PROSE_DOT_END = re.compile(r"(?i)\s(?:ponto|punto|point)\s+(?:de|no)\Z")
_NEXT_WORD = re.compile(r"\s+[^\W\d_]")


#: "@" percent-encoded, as in a link's query string ("?email=j.doe%40example.com").
_URL_AT = "%40"


def email_live_start(text: str, start: int = 0) -> int:
    """Where an address the text so far could still extend begins: the word being written (it
    may be a local part), or a spelled-out address whose domain may still grow or whose "at" may
    still come; ``len(text)`` when none."""
    n = len(text)
    floor = max(start, n - EMAIL_MAX - LOOKAHEAD)
    word = n
    while word > floor and (text[word - 1].isalnum() or text[word - 1] in _EMAIL_PUNCT):
        word -= 1
    # spelled out: from a word boundary far enough back for the longest address
    begin = max(start, n - EMAIL_MAX - 16)
    while begin > start and not text[begin - 1].isspace():
        begin -= 1
    return min(word, _spelled_live(text, begin))


def emails(text: str, start: int, *, candidates: bool = False) -> list[Span]:
    spans = []
    signs = (*(AT_SIGNS if not text.isascii() else "@"), _URL_AT)
    for sign in signs:
        at = text.find(sign, start)
        while at != -1:
            local = _EMAIL_LOCAL.search(text, max(start, at - 64), at)
            after = at + len(sign)
            domain = _EMAIL_DOMAIN.match(text, after, after + 100 + LOOKAHEAD)
            if candidates:
                s = local.start() if local else at
                spans.append(Span(s, domain.end() if domain else after, "email"))
            elif local and domain:
                s = local.start()
                while s < at and text[s] in ".-'":  # an address does not begin with punctuation
                    s += 1
                if s < at and (s == 0 or not (text[s - 1].isalnum() or text[s - 1] in "._%+-")):
                    spans.append(Span(s, domain.end(), "email"))
            at = text.find(sign, at + 1)
    return spans


def spelled_emails(text: str, start: int) -> list[Span]:
    """ "jane dot doe at example dot org", "jane [at] example [dot] org", "mike at gmail.com",
    "joana arroba gmail ponto com ponto br", "luc (arobase) orange (point) fr"."""
    spans = []
    if text.isascii():
        # one translate covers " at ", " AT ", "(at)", "[arroba]", ... (bytes: translate in C)
        words = text.encode("ascii").translate(_AT_BYTES)
        for token in _AT_TOKENS:
            at = words.find(token, start)
            while at != -1:
                span = _spelled_at(text, at, text[at : at + len(token)], start)
                if span is not None:
                    spans.append(span)
                at = words.find(token, at + 1)
    else:
        for m in _SPELLED_AT.finditer(text, start):
            span = _spelled_at(text, m.start(), m.group(), start)
            if span is not None:
                spans.append(span)
    return spans


def _spelled_at(text: str, at: int, token: str, start: int) -> Span | None:
    # most " at " are prose or a real address ("at help@x.org"): a word, then no dot, no gap
    after = at + len(token)
    while after < len(text) and text[after] == " ":
        after += 1
    end = after
    while end < len(text) and end - after < 64 and (text[end].isalnum() or text[end] in "-_"):
        end += 1
    if end == after or end >= len(text) or text[end] not in " .[({":
        return None
    domain = _SPELLED_DOMAIN.match(text, at + len(token), at + len(token) + 100)
    local = _SPELLED_LOCAL.search(text, max(start, at - 64), at + (1 if token[0] == " " else 0))
    if domain is None or local is None:
        return None
    if local.start() > 0 and (text[local.start() - 1].isalnum() or text[local.start() - 1] == "@"):
        return None
    parts = re.split(_DOT, domain.group(1), flags=re.IGNORECASE)
    if parts[-1].lower() not in _TLDS:
        return None
    if _PROSE_DOT_END.search(domain.group(1)) and _NEXT_WORD.match(text, domain.end()):
        return None
    if token[0] == " ":  # a plain spoken at: prose unless the words say otherwise
        local_words = re.split(_DOT, local.group(1).strip(), flags=re.IGNORECASE)
        if local_words[-1].lower() in _PROSE_WORDS or parts[0].lower() in _PROSE_WORDS:
            return None
    return Span(local.start(), domain.end(), "email")


def _spelled_live(text: str, begin: int) -> int:
    """Where a spelled-out address being written begins: a partial match, a match whose domain
    may still take a "dot word", or trailing words an "at" may still follow."""
    n = len(text)
    for match in _SPELLED_PARTIAL.finditer(text, begin, partial=True, overlapped=True):
        # partial matching prefers a complete match: test the "dot word" still to come apart
        if (
            match.partial
            or match.end() + LOOKAHEAD > n
            or _DOT_GROW.fullmatch(text, match.end(), partial=True) is not None
        ):
            return int(match.start())
    tail = _SPELLED_LOCAL_OPEN.search(text, max(begin, n - 3 * 64 - 16))
    return tail.start() if tail else n
