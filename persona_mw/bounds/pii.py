"""PII detection: e-mail, phone, payment card, IBAN, US SSN and IP addresses.

Fast candidate patterns find stretches that could be PII; each candidate is then checked (Luhn,
mod 97, address parsing) before it counts, so order numbers and versions do not. The candidate
patterns also bound the stream hold-back: a stream is never cut inside a candidate
(:meth:`PIIDetector.segments`), and holds only a candidate the text so far could still extend
(:meth:`PIIDetector.live_start`).
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable
from typing import Literal

import regex

from ..types import Span
from .detectors import LOOKAHEAD, partial_live_start

__all__ = ["PII_KINDS", "PIIDetector", "PIIKind", "iban_valid", "luhn_valid"]

PIIKind = Literal["email", "phone", "card", "iban", "ssn", "ip"]
PII_KINDS: tuple[PIIKind, ...] = ("email", "phone", "card", "iban", "ssn", "ip")

_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}\Z")
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?){0,3}\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)
#: Longest e-mail address we recognise as one hit (local part 64, domain 100).
_EMAIL_MAX = 64 + 1 + 100
# Numbers and IBANs in one pass. The pattern opens with one character class, so `re` skips
# everything else at C speed; a run is then trimmed and classified in Python. An IBAN is two
# capitals, two digits, then groups; a number run starts with a digit, "+" or "(" and has at
# least five more digits or separators (ASCII digits).
_CANDIDATE = re.compile(
    r"[+(0-9A-Z](?:(?<=[A-Z])[A-Z][0-9][0-9](?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
    r"|(?<=[+(0-9])[0-9 \-.()/]{5,40})"
)
_NUMBER_MAX = 41
_CANDIDATE_PARTIAL = regex.compile(_CANDIDATE.pattern)
#: What number and IBAN candidates are made of: none spans any other character.
_RUN_CHARS = frozenset(string.digits + string.ascii_uppercase + " -.()/+")
#: What an e-mail address is made of: a word at the end of a stream may be a local part.
_EMAIL_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-@")
_IPV6_MAX = 45
_IPV4_SHAPE = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}\Z")
_SSN_VALID = re.compile(r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\Z")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:.")
_IPV6_RUN = re.compile(rf"[0-9A-Fa-f:.]{{2,{_IPV6_MAX}}}")
_PHONE_SHAPE = re.compile(r"(?:\+\d{1,3}[ \-.]?)?(?:\(\d{1,4}\) ?|\d{1,4}[ \-.]?){1,5}\d{2,6}\Z")
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}\Z")
_CARD_SHAPE = re.compile(r"\d{4}(?:[ \-]?\d{3,6}){2,4}\Z")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of payment card numbers."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


class PIIDetector:
    """E-mail, phone, payment card (Luhn), IBAN (mod 97), US SSN, IPv4/IPv6 addresses.

    Span labels are the kinds. Numbers are checked, not just shaped: a 16-digit order number that
    fails Luhn is not a card, ``999.1.1.1`` is not an address.
    """

    name = "pii"

    def __init__(self, kinds: Iterable[PIIKind] = PII_KINDS) -> None:
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {list(PII_KINDS)}")
        self.max_span = max(_EMAIL_MAX if "email" in self.kinds else 0, _NUMBER_MAX, 45) + LOOKAHEAD

    def detect(self, text: str, start: int = 0) -> list[Span]:
        spans: list[Span] = []
        kinds = self.kinds
        if "email" in kinds:
            spans += _emails(text, start)
        if kinds & {"phone", "card", "ssn", "ip", "iban"}:
            spans += self._numbers(text, start)
        if "ip" in kinds and ":" in text:
            spans += _ipv6(text, start)
        return _drop_overlaps(spans)

    def segments(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Candidate stretches (number runs, e-mail and IPv6 candidates), valid or not: a
        stream is never cut inside one, so a window never sees the tail of a run as a run."""
        out = [m.span() for m in _CANDIDATE.finditer(text, start)]
        if "@" in text:
            out += [(s.start, s.end) for s in _emails(text, start, candidates=True)]
        if ":" in text:
            out += [(s.start, s.end) for s in _ipv6(text, start, candidates=True)]
        return out

    def live_start(self, text: str, start: int = 0) -> int:
        """The earliest candidate the text so far could still extend: a number or IBAN
        candidate that is partial or ends within the look-ahead, the word being written (it may
        be an e-mail address's local part) and a trailing run of IPv6 characters."""
        n = len(text)
        live = n
        kinds = self.kinds
        if kinds & {"phone", "card", "ssn", "ip", "iban"}:
            # scan from where a run of candidate characters begins, as from the window start
            begin = _run_start(text, max(start, n - self.max_span), start, _RUN_CHARS)
            live = partial_live_start(_CANDIDATE_PARTIAL, text, begin)
        if "email" in kinds:
            floor = max(start, n - _EMAIL_MAX - LOOKAHEAD)
            live = min(live, _run_start(text, n, floor, _EMAIL_CHARS))
        if "ip" in kinds:
            floor = max(start, n - _IPV6_MAX - LOOKAHEAD)
            live = min(live, _run_start(text, n, floor, _HEX_COLON))
        return max(start, live)

    def _numbers(self, text: str, start: int) -> list[Span]:
        """One pass over digit runs and IBAN candidates; each run is classified (IBAN, IPv4,
        SSN, card, phone)."""
        kinds = self.kinds
        spans = []
        for m in _CANDIDATE.finditer(text, start):
            s = m.start()
            if m.group()[0].isalpha():  # an IBAN candidate
                e = m.end()
                if (
                    "iban" in kinds
                    and not (s > 0 and text[s - 1].isalnum())
                    and not (e < len(text) and text[e].isalnum())
                    and iban_valid(m.group())
                ):
                    spans.append(Span(s, e, "iban"))
                continue
            raw = m.group().rstrip(" -.(/")
            if raw.endswith(")") and raw.count("(") <= raw.count(")") - 1:
                raw = raw[:-1]
            e = s + len(raw)
            if s > 0 and (text[s - 1].isalnum() or text[s - 1] in "+._-"):
                continue
            if e < len(text) and (text[e].isalnum() or text[e] == "_"):
                continue
            if _IPV4_SHAPE.match(raw):
                if "ip" in kinds and _ipv4_ok(raw):
                    spans.append(Span(s, e, "ip"))
                continue
            if _SSN_SHAPE.match(raw):
                if "ssn" in kinds and _SSN_VALID.match(raw):
                    spans.append(Span(s, e, "ssn"))
                continue
            digits = "".join(ch for ch in raw if ch.isdigit())
            if (
                "card" in kinds
                and 13 <= len(digits) <= 19
                and raw[0].isdigit()
                and luhn_valid(digits)
                and _CARD_SHAPE.match(raw)
            ):
                spans.append(Span(s, e, "card"))
            elif (
                "phone" in kinds
                and _PHONE_SHAPE.match(raw)
                and (
                    (raw[0] in "+(" and 7 <= len(digits) <= 15)
                    or (raw != digits and 9 <= len(digits) <= 15)
                    or 10 <= len(digits) <= 11
                )
            ):
                spans.append(Span(s, e, "phone"))
        return spans


def _ipv6_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _ipv4_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return True


def _emails(text: str, start: int, *, candidates: bool = False) -> list[Span]:
    spans = []
    at = text.find("@", start)
    while at != -1:
        local = _EMAIL_LOCAL.search(text, max(start, at - 64), at)
        domain = _EMAIL_DOMAIN.match(text, at + 1, at + 1 + 100 + LOOKAHEAD)
        if candidates:
            s = local.start() if local else at
            spans.append(Span(s, domain.end() if domain else at + 1, "email"))
        elif local and domain:
            s = local.start()
            while s < at and text[s] in ".-":  # an address does not begin with punctuation
                s += 1
            if s < at and (s == 0 or not (text[s - 1].isalnum() or text[s - 1] in "._%+-")):
                spans.append(Span(s, domain.end(), "email"))
        at = text.find("@", at + 1)
    return spans


def _ipv6(text: str, start: int, *, candidates: bool = False) -> list[Span]:
    """From each colon, the surrounding run of hex digits, colons and dots."""
    spans = []
    colon = text.find(":", start)
    while colon != -1:
        s = colon
        while s > start and colon - s < 45 and text[s - 1] in _HEX_COLON:
            s -= 1
        m = _IPV6_RUN.match(text, s)
        end = m.end() if m else colon + 1
        if candidates:
            spans.append(Span(s, end, "ip"))
        elif m:
            run = m.group()
            for candidate in (run.strip("."), run.strip(".:")):
                if candidate.count(":") >= 2 and _ipv6_ok(candidate):
                    cs = s + run.index(candidate)
                    ce = cs + len(candidate)
                    if not (cs > 0 and text[cs - 1].isalnum()) and not (
                        ce < len(text) and text[ce].isalnum()
                    ):
                        spans.append(Span(cs, ce, "ip"))
                    break
        colon = text.find(":", max(colon + 1, end))
    return spans


def _run_start(text: str, index: int, floor: int, chars: frozenset[str]) -> int:
    """Where the run of ``chars`` that ends at ``index`` begins (not before ``floor``)."""
    while index > floor and text[index - 1] in chars:
        index -= 1
    return index


def _drop_overlaps(spans: list[Span]) -> list[Span]:
    """Earliest first, then longest; a span overlapping one already kept is dropped."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept
