"""PII detection: e-mail, phone, payment card, IBAN, US SSN and IP addresses.

Fast candidate patterns find stretches that could be PII; each candidate is then validated with
libraries made for it before it counts — ``phonenumbers`` (Google's libphonenumber metadata:
numbers valid for a region, national formats with the deployment's default region) and
``python-stdnum`` (Luhn, IBAN per country, SSN) — so order numbers, versions, timestamps,
coordinates and prices do not. The candidate patterns also bound the stream hold-back: a stream
is never cut inside a candidate (:meth:`PIIDetector.segments`), and holds only a candidate the
text so far could still extend (:meth:`PIIDetector.live_start`).

Numbers may be written with any Unicode space (NBSP, narrow NBSP, thin space), hyphens and
dashes (non-breaking hyphen, en dash), dots or slashes between groups, and in full-width digits.
E-mail addresses may have non-ASCII local parts and domains, a full-width at sign, or be spelled
out ("jane at example dot org", "jane [at] example [dot] org"): :mod:`persona_mw.bounds.pii_email`.
"""

from __future__ import annotations

import ipaddress
import re
import string
import unicodedata
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Literal

import phonenumbers
import regex
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.us import ssn as _ssn

from ..types import Span
from .lookahead import LOOKAHEAD, partial_live_start
from .pii_email import AT_SIGNS, EMAIL_MAX, email_live_start, emails, spelled_emails

__all__ = ["PHONE_REGIONS", "PII_KINDS", "PIIDetector", "PIIKind", "iban_valid", "luhn_valid"]

PIIKind = Literal["email", "phone", "card", "iban", "ssn", "ip"]
PII_KINDS: tuple[PIIKind, ...] = ("email", "phone", "card", "iban", "ssn", "ip")

#: Regions whose national formats (a trunk "0" and no country code) are recognised besides the
#: deployment's default region: "020 7946 0958" is a London number wherever it is written.
PHONE_REGIONS = ("GB", "FR", "DE", "ES", "IT", "PT", "BR", "NL", "BE", "AT", "CH", "IE", "AU")
#: Regions whose national numbers count only right after a phone word ("mi cel es 55 4812 9376"):
#: they write numbers without a trunk "0", so out of context a digit run is too often one.
_CONTEXT_ONLY_REGIONS = ("MX", "AR", "US", "CA")

_DIGITS = "0-9\uff10-\uff19"
#: Group separators inside numbers: spaces of every width, hyphens and dashes, dots, slashes.
_SEPS = " \u00a0\u2000-\u200a\u202f\u205f\u3000\\-\u2010-\u2015\u2212\ufe63\uff0d./()\uff0e"
#: Between an IBAN's groups: nothing, up to three spaces ("IE98  AIBK  9311"), or a dash.
_IBAN_GAP = "(?:[ \u00a0\u202f]{0,3}|-)"
# Numbers and upper-case IBANs in one pass. The pattern opens with one character class, so `re`
# skips everything else at C speed; a run is then trimmed and classified in Python.
_CANDIDATE = re.compile(
    rf"[+(A-Z{_DIGITS}](?:(?<=[A-Z])[A-Z][0-9][0-9](?:{_IBAN_GAP}[A-Z0-9]{{4}}){{2,7}}"
    rf"(?:{_IBAN_GAP}[A-Z0-9]{{1,3}})?"
    rf"|(?<=[+({_DIGITS}])[{_DIGITS}{_SEPS}]{{5,40}})"
)
#: The two halves of ``_CANDIDATE``, faster apart: a pattern that opens with a character class
#: tries a match at each such character, and upper-case letters are common; IBANs are found
#: with a plain ``bytes.find`` instead (:func:`_ibans`).
_NUMBER = re.compile(rf"[+({_DIGITS}][{_DIGITS}{_SEPS}]{{5,40}}")
_UPPER_IBAN = re.compile(
    rf"[A-Z][A-Z][0-9][0-9](?:{_IBAN_GAP}[A-Z0-9]{{4}}){{2,7}}(?:{_IBAN_GAP}[A-Z0-9]{{1,3}})?"
)
#: Letters of either case to "A", digits to "0", everything else to ".": "GB82" and "gb82"
#: read "AA00".
_IBAN_SHAPE = bytes(
    ord("A") if 65 <= i <= 90 or 97 <= i <= 122 else ord("0") if 48 <= i <= 57 else ord(".")
    for i in range(256)
)
_IBAN_HEAD = re.compile(r"[A-Za-z]{2}[0-9]{2}")
_IBAN_ANY_CASE = re.compile(
    rf"[A-Za-z]{{2}}[0-9]{{2}}(?:{_IBAN_GAP}[A-Za-z0-9]{{4}}){{2,7}}"
    rf"(?:{_IBAN_GAP}[A-Za-z0-9]{{1,3}})?"
)
_IBAN_PARTIAL = regex.compile(_IBAN_ANY_CASE.pattern)
#: The spaces (or the dash) between an IBAN's groups.
_GAPS = re.compile(r"[\s-]+")
#: The longest IBAN written in groups of four (34 characters and 8 gaps of 3 spaces).
_IBAN_MAX = 58
_NUMBER_MAX = 41
_CANDIDATE_PARTIAL = regex.compile(_CANDIDATE.pattern)
_SEP_TO_SPACE = {ord(c): " " for c in "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006"}
_SEP_TO_SPACE.update({ord(c): " " for c in "\u2007\u2008\u2009\u200a\u202f\u205f\u3000"})
_SEP_TO_SPACE.update({ord(c): "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63"})
_IPV4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_IPV4_SHAPE = re.compile(rf"{_IPV4}\Z")
#: A CIDR block ("81.2.69.0/24"): an address and its prefix length.
_CIDR = re.compile(rf"({_IPV4})/(\d{{1,2}})\Z")
_SSN_SHAPE = re.compile(r"\d{3}([- ])\d{2}\1\d{4}\Z")
#: A card number: its digits joined, or in groups (the first of 4-8 digits, the others of 2-8)
#: with one separator throughout ("4556 7309 7108 3672", "455673 097108 3672", "2223.6101...").
_CARD_SHAPE = re.compile(r"(?:\d+|\d{4,8}([ \-./])\d{2,8}(?:\1\d{2,8})*)\Z")
_DATE_START = re.compile(
    r"(?:\d{4}[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"
    r"|(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.]\d{2,4})(?!\d)"
)
#: Ten digits in pairs with one separator, as French phone numbers are written ("01.42.68.53.17"):
#: never a date, though it begins like one.
_PAIRS = re.compile(r"\d\d([ .\-])\d\d(?:\1\d\d){3}\Z")
#: Postal codes: Brazil's CEP ("01310-200"), the US ZIP+4 ("02139-4307"), Portugal's ("1250-096").
_POSTAL_SHAPE = re.compile(r"(?:\d{5}-\d{3,4}|\d{4}-\d{3})\Z")
_DECIMAL = re.compile(r"\d+\.\d{3,}\Z")
_PHONE_LAYOUT = re.compile(r"(?:\+\d{1,3}[ \-.]?\(?\d|\(\d{2,5}\) ?\d|\d{3}([-. ])\d{3}\1\d{4}\Z)")
#: An area code in parentheses without a trunk "0" ("(11) 97342-8815"): a national number of the
#: deployment's region, or a valid one of another region we know that writes it so (Brazil does,
#: Germany does not: "(2019) 1234-5678" is no Essen number).
_AREA_CODE = re.compile(r"(\([1-9]\d{1,3}\)) ?\d")
_PHONE_SHAPE = re.compile(r"(?:\+\d{1,3}[ \-.]?)?(?:\(\d{1,4}\) ?|\d{1,5}[ \-./]?){1,6}\d{2,6}\Z")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Words before a dotted number that make it a version, not an address (es fr de pt it too).
_VERSION_WORDS = _words(
    "v ver version versions release build kernel firmware chrome firefox python node java "
    "windows ios android rev revision patch update upgrade upgraded "
    "section sections chapter clause abschnitt kapitel paragraph art article artikel articolo "
    "capitolo sezione apartado seccion capitulo chapitre "
    "versión versao versão versione versie "
    "actualiza actualizar atualize atualizar aggiorna aggiornare aktualisiere"
)
#: Words a few words before "to" that make the number after it a version ("updated it to").
_UPDATE_WORDS = _words(
    "update updated updating upgrade upgraded upgrading bump bumped downgrade downgraded "
    "rollback rolled revert reverted migrate migrated pin pinned firmware version release"
)
_DOTTED = re.compile(r"v?\d+(?:\.\d+)+")
#: Words just before a number that make it a phone number the number alone does not say:
#: a local number without its area code ("my number is 482-7719"), a national number of
#: another region than the deployment's ("mi móvil es el 612 34 56 78").
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|cell|cellphone|mobile|tel|tlf|tfno|telephone|call me|call|text me|"
    r"reach me|whatsapp|whats|zap|ring me|dial|"
    r"(?:my|home|work|his|her|their) number|"
    r"m[oó]vil|celular|cel|contacto|contact|kontakt|tel[eé]fono|"
    r"ll[aá]mame|ll[aá]ma(?:nos)? al|m[aá]rcame|marca al|"
    r"mi n[uú]mero|fijo|"
    r"portable|t[eé]l[eé]phone|mon num[eé]ro|appelle[sz]?[ -]moi|appelez(?:[ -]nous)?|"
    r"joignable|injoignable|composez|fixe|"
    r"handy|telefon|handynummer|telefonnummer|ruf mich an|meine nummer|erreichbar|"
    r"anrufen|festnetz|mobil|erreichen sie mich unter|unter der nummer|"
    r"telem[oó]vel|liga(?:r)?(?:-me| pra mim| para| pro| pra)|me liga|ligue(?:-me)?|telefona|"
    r"meu n[uú]mero|fixo|contato|"
    r"cellulare|chiamami|chiama(?:re)?|telefonare|il mio numero|reperibile|fisso)"
    r"\b[^0-9\n]{0,16}\Z"
)
#: Words just before a number that make it an identifier, not a phone number.
_ID_CONTEXT = re.compile(
    r"(?i)\b(?:order|part|invoice|ticket|tracking|serial|model|item|sku|ref|reference|case|"
    r"booking|confirmation|account|policy|customer|member|transaction|shipment|parcel|"
    r"lot|batch|s/n|sn|zip|zip code|postcode|post code|postal code|"
    r"pedido|factura|referencia|lote|serie|c[oó]digo postal|"
    r"commande|facture|r[eé]f[eé]rence|s[eé]rie|code postal|"
    r"bestellung|bestell|rechnung|kunden|sendung|(?-i:Charge)|chargen|los-?nr|losnummer|"
    r"serien|plz|"
    r"postleitzahl|"
    r"encomenda|fatura|cep|"
    r"ordine|fattura|riferimento|lotto|matricola|cap|codice postale|"
    r"vat|tax|tin|sin|nas|nir|insee|siret|siren|tva|nif|nie|cif|dni|cpf|cnpj|iva|p\.? ?iva|"
    r"routing|aba|sort code|bic|swift|"
    r"partita iva|codice fiscale|steuernummer|steuer-id|ust-?idnr|bsn)"
    r"(?:[ -]?(?:number|no\.?|nr\.?|num\.?|n[º°o]?\.?|id|#|n[uú]mero|nummer|numero))?"
    r"(?: is| es| est| ist| [a-z]{2})?"
    r"[\s:#.]{0,4}\Z"
)
#: A local number of seven digits, as in North America ("482-7719").
_LOCAL_SHAPE = re.compile(r"\d{3}[-. ]\d{4}\Z")
_SSN_CONTEXT = re.compile(r"(?i)(?:ssn|ss ?#|ss no|social security|soc\.? sec\.?)\D{0,20}\Z")
#: US SSNs made public in advertising (the Woolworth wallet card, a pamphlet, an identity-theft
#: ad): ``python-stdnum`` rejects them as never valid, but written as someone's SSN they are one.
_PUBLISHED_SSNS = frozenset({"078051120", "219099999", "457555462"})
#: Payment card numbers begin with 2-6 (Mastercard 2-series and 5, Amex/Diners/JCB 3, Visa 4,
#: Discover/UnionPay 6); order and tracking numbers often do not.
_CARD_FIRST = frozenset("23456")

#: What number and IBAN candidates are made of: none spans any other character.
_RUN_CHARS = frozenset(
    string.digits
    + "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"
    + string.ascii_uppercase
    + " -.()/+\uff0e\u00a0\u202f\u205f\u3000\u2212\ufe63\uff0d"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "".join(chr(c) for c in range(0x2010, 0x2016))
)
_IPV6_MAX = 45
#: Separators a number run does not end with: spaces, hyphens and dashes ("3160 – ok"), dots.
_TRAILING = "".join(c for c in _RUN_CHARS if not c.isalnum() and c not in ")+")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of payment card numbers (``python-stdnum``)."""
    return bool(digits) and _luhn.is_valid(digits)


@lru_cache(maxsize=4096)  # a stream rescans its window: the same candidates come back
def iban_valid(iban: str) -> bool:
    """ISO 13616 IBAN: the country's length and format, and mod 97 (``python-stdnum``). Not the
    national bank registry ``python-stdnum`` also checks by default: an account at a bank it
    does not list ("BE68 5390 0754 7034") is still an account number to redact."""
    return bool(_iban.is_valid(iban, check_country=False))


class PIIDetector:
    """E-mail, phone, payment card (Luhn), IBAN (mod 97), US SSN, IPv4/IPv6 addresses.

    Span labels are the kinds. ``region`` is the deployment's default phone region (ISO 3166
    alpha-2): numbers without a country code are read as that region's; national numbers of
    :data:`PHONE_REGIONS` (trunk "0") are recognised too.
    """

    name = "pii"

    def __init__(self, kinds: Iterable[PIIKind] = PII_KINDS, *, region: str = "US") -> None:
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {list(PII_KINDS)}")
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r}; use an ISO 3166 code like 'US'")
        self.region = region
        self._trunk_regions = (region, *(r for r in PHONE_REGIONS if r != region))
        self._context_regions = (
            *self._trunk_regions,
            *(r for r in _CONTEXT_ONLY_REGIONS if r not in self._trunk_regions),
        )
        self._country_code = phonenumbers.country_code_for_region(region)
        self.max_span = max(EMAIL_MAX if "email" in self.kinds else 0, _NUMBER_MAX, 45) + LOOKAHEAD

    def detect(self, text: str, start: int = 0) -> list[Span]:
        spans: list[Span] = []
        kinds = self.kinds
        if "email" in kinds:
            spans += emails(text, start)
            spans += spelled_emails(text, start)
        if kinds & {"phone", "card", "ssn", "ip", "iban"}:
            spans += self._numbers(text, start)
        if "ip" in kinds and _IPV6_HINT.search(text, start):
            spans += _ipv6(text, start)
        return _drop_overlaps(spans)

    def segments(self, text: str, start: int = 0) -> list[tuple[int, int]]:
        """Candidate stretches (number runs, e-mail and IPv6 candidates), valid or not: a
        stream is never cut inside one, so a window never sees the tail of a run as a run."""
        out = [m.span() for m in _CANDIDATE.finditer(text, start)]
        if "iban" in self.kinds:  # lower-case IBANs: letters are no run characters
            out += [(s, e) for s, e, valid in _ibans(text, start) if valid]
        if "%40" in text or any(sign in text for sign in (AT_SIGNS if not text.isascii() else "@")):
            out += [(s.start, s.end) for s in emails(text, start, candidates=True)]
        out += [(s.start, s.end) for s in spelled_emails(text, start)]
        if ":" in text:
            out += [(s.start, s.end) for s in _ipv6(text, start, candidates=True)]
        return out

    def live_start(self, text: str, start: int = 0) -> int:
        """The earliest candidate the text so far could still extend: a number or IBAN
        candidate that is partial or ends within the look-ahead (any separator it may use), the
        word being written (it may be an e-mail address's local part), a spelled-out address
        whose domain may still grow or whose "at" may still come, and a trailing run of IPv6
        characters."""
        n = len(text)
        live = n
        kinds = self.kinds
        if kinds & {"phone", "card", "ssn", "ip", "iban"}:
            # scan from where a run of candidate characters begins, as from the window start
            begin = _run_start(text, max(start, n - self.max_span), start, _RUN_CHARS)
            live = partial_live_start(_CANDIDATE_PARTIAL, text, begin)
            # `regex` reports a partial match only where no complete one follows: the digits of
            # an IBAN being written ("DE89 3704 0", "de89 3704 0") are a complete number
            # candidate, which hid the partial IBAN from its country code on; and a lower-case
            # IBAN's letters ("gb82 west 1234") are no run characters at all: look back as far
            # as an IBAN reaches
            if "iban" in kinds:
                iban_from = max(start, min(begin, n - _IBAN_MAX - LOOKAHEAD))
                live = min(live, partial_live_start(_IBAN_PARTIAL, text, iban_from))
        if "email" in kinds:
            live = min(live, email_live_start(text, start))
        if "ip" in kinds:
            floor = max(start, n - _IPV6_MAX - LOOKAHEAD)
            live = min(live, _run_start(text, n, floor, _HEX_COLON))
        return max(start, live)

    def _numbers(self, text: str, start: int) -> list[Span]:
        """Digit runs and IBAN candidates, the same stretches as :data:`_CANDIDATE` finds; each
        run is classified (IBAN, IPv4, SSN, card, phone)."""
        kinds = self.kinds
        spans = []
        # the IBAN candidates first: digits inside one are not a number of their own
        taken: list[tuple[int, int]] = []
        for s, e, valid in _ibans(text, start):
            taken.append((s, e))
            if valid and "iban" in kinds:
                spans.append(Span(s, e, "iban"))
        next_taken = 0
        pos = start
        while (m := _NUMBER.search(text, pos)) is not None:
            s = m.start()
            pos = m.end()
            while next_taken < len(taken) and taken[next_taken][1] <= s:
                next_taken += 1
            if next_taken < len(taken) and taken[next_taken][0] <= s:
                # inside an IBAN candidate (both in text order): go on from its end, as the one
                # pattern of both would
                pos = taken[next_taken][1]
                continue
            raw = m.group().rstrip(_TRAILING)
            if raw.endswith(")") and raw.count("(") <= raw.count(")") - 1:
                raw = raw[:-1]
            e = s + len(raw)
            # "#12345" is an id, "SSN#672-31-0458" is not
            if (
                s > 0
                and (text[s - 1].isalnum() or text[s - 1] in "+._-#/:,")
                and not (text[s - 1] == "," and s > 1 and text[s - 2].isalpha())  # a CSV field
                and (text[s - 1] != "#" or not _SSN_CONTEXT.search(text, max(0, s - 30), s))
                and not (text.startswith("://", s - 3) and _ipv4_shaped(raw))  # a URL's host
            ):
                continue
            if e < len(text) and (text[e].isalnum() or text[e] in "_%°"):
                continue
            kind = self._classify(raw, text, s)
            if kind is not None and kind in kinds:
                spans.append(Span(s, e, kind))
        return spans

    def _classify(self, raw: str, text: str, s: int) -> PIIKind | None:
        """The kind of a trimmed run; the context before it decides versions and bare SSNs."""
        kind = self._kind(raw)
        if kind == "ip" and _after_version_word(text, s):
            return None
        if kind == "phone" and _ID_CONTEXT.search(text, max(0, s - 40), s):
            return None  # "part number 0451-2231-0098", "order #020 7946 0958"
        if kind is None and len(raw) == 9 and raw.isdigit() and _SSN_CONTEXT.search(text, 0, s):
            return "ssn" if _ssn_valid(raw) else None
        if kind is None and _PHONE_CONTEXT.search(text, max(0, s - 40), s):
            return "phone" if self._phone_in_context(raw) else None
        return kind

    @lru_cache(maxsize=4096)  # noqa: B019 (detectors live as long as the policy; streams rescan)
    def _kind(self, run: str) -> PIIKind | None:
        """The kind of a run of digits and separators, out of context."""
        raw = unicodedata.normalize("NFKC", run).translate(_SEP_TO_SPACE)
        if "  " in raw:  # a run of spaces between groups reads as one ("531  82  4417")
            raw = " ".join(raw.split())
        if _IPV4_SHAPE.match(raw):
            return "ip" if _ip_ok(ipaddress.IPv4Address, raw) else None
        if (cidr := _CIDR.match(raw)) is not None:
            valid = _ip_ok(ipaddress.IPv4Address, cidr[1]) and int(cidr[2]) <= 32
            return "ip" if valid else None
        if _is_date(raw) or _DECIMAL.match(raw):
            return None
        digits = "".join(ch for ch in raw if ch.isdigit())
        if _SSN_SHAPE.match(raw):
            return "ssn" if _ssn_valid(digits) else None
        if (
            13 <= len(digits) <= 19
            and raw[0] in _CARD_FIRST
            and _CARD_SHAPE.match(raw)
            and luhn_valid(digits)
        ):
            return "card"
        if (
            7 <= len(digits) <= 15
            and _PHONE_SHAPE.match(raw)
            and not _POSTAL_SHAPE.match(raw)
            and self._phone_valid(raw, digits)
        ):
            return "phone"
        return None

    def _phone_in_context(self, raw: str) -> bool:
        """After a phone word: a local number, or a valid one of any region we know."""
        plain = unicodedata.normalize("NFKC", raw).translate(_SEP_TO_SPACE)
        if _LOCAL_SHAPE.match(plain):
            return True
        return any(map(phonenumbers.is_valid_number, _parsed(plain, self._context_regions)))

    def _phone_valid(self, raw: str, digits: str) -> bool:
        area = _AREA_CODE.match(raw)
        if raw.startswith("+"):
            regions: tuple[str | None, ...] = (None,)
        elif digits.startswith("0") or area:
            regions = self._trunk_regions
        else:
            regions = (self.region,)
        for number in _parsed(raw, regions):
            if area and number.country_code != self._country_code and not _written_so(number, area):
                continue
            if phonenumbers.is_valid_number(number):
                return True
            # Laid out like a phone number ("(555) 123-4567", "555-123-4567", "+1 555 ..."): a
            # number of a possible length counts even in ranges not (yet) assigned, as in
            # fiction and examples; a bare digit run must be a valid number.
            if (
                _PHONE_LAYOUT.match(raw)
                and phonenumbers.is_possible_number(number)
                and (number.country_code == self._country_code or raw.startswith(("+", "0")))
            ):
                return True
        return False


def _written_so(number: phonenumbers.PhoneNumber, area: re.Match[str]) -> bool:
    """Whether the number's region writes it with the same area code in parentheses."""
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return national.startswith(area[1])


def _ipv4_shaped(raw: str) -> bool:
    """An IPv4 address or CIDR block by its shape (validity is :meth:`PIIDetector._kind`'s)."""
    return _IPV4_SHAPE.match(raw) is not None or _CIDR.match(raw) is not None


def _ssn_valid(digits: str) -> bool:
    """A US SSN (``python-stdnum``: area, group and serial in range), the published ones too."""
    return bool(_ssn.is_valid(digits)) or digits in _PUBLISHED_SSNS


def _is_date(raw: str) -> bool:
    """Whether a run begins with a date: a day and a month in range, either order
    ("2024-01-15", "15.01.24", "01/15/2024"); not a French phone number's pairs."""
    m = _DATE_START.match(raw)
    if m is None or _PAIRS.match(raw):
        return False
    if m["m"] is not None:
        return 1 <= int(m["m"]) <= 12 and 1 <= int(m["d"]) <= 31
    a, b = int(m["a"]), int(m["b"])
    return 1 <= min(a, b) <= 12 and max(a, b) <= 31


def _parsed(raw: str, regions: Iterable[str | None]) -> Iterator[phonenumbers.PhoneNumber]:
    """``raw`` read as a phone number of each region in turn, where it parses; a Mexican mobile
    still written with the "1" Mexico dropped in 2019 ("+52 1 33 2156 8804") also without it."""
    for region in regions:
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        yield number
        national = str(number.national_number)
        if number.country_code == 52 and len(national) == 11 and national.startswith("1"):
            yield phonenumbers.PhoneNumber(country_code=52, national_number=int(national[1:]))


def _ibans(text: str, start: int) -> Iterator[tuple[int, int, bool]]:
    """IBAN candidates from ``start``, left to right, as (start, end, valid). Upper case
    ("GB82 WEST 1234 ..."): every stretch :data:`_UPPER_IBAN` matches, valid or not (its digits
    are no number of their own). Lower or mixed case ("nl91abna0417164300", "be68 5390 0754
    7034"), from a word start: only a valid one, the longest valid prefix ending at a group
    break, since the any-case pattern cannot tell a spaced IBAN's last group from the next word
    ("... 7034 within" reads as groups too)."""
    if text.isascii():
        shape = text.encode("ascii").translate(_IBAN_SHAPE)
        heads: Iterator[int] = _finds(shape, b"AA00", start)
    else:
        heads = (m.start() for m in _IBAN_HEAD.finditer(text, start))
    after = start  # the end of the last candidate: a head inside it is part of it
    for at in heads:
        if at < after:
            continue
        if text[at : at + 2].isupper() and (m := _UPPER_IBAN.match(text, at)) is not None:
            s, e = m.span()
            after = e
            yield s, e, _bounded(text, s, e) and iban_valid(_GAPS.sub("", m.group()))
        elif (
            not (at > 0 and text[at - 1].isalnum())
            and (found := _valid_prefix(text, at)) is not None
        ):
            after = found
            yield at, found, True


def _finds(haystack: bytes, needle: bytes, start: int) -> Iterator[int]:
    at = haystack.find(needle, start)
    while at != -1:
        yield at
        at = haystack.find(needle, at + 1)


def _valid_prefix(text: str, at: int) -> int | None:
    """The end of the longest valid IBAN from ``at`` that ends at a group break, if any."""
    m = _IBAN_ANY_CASE.match(text, at)
    if m is None:
        return None
    # group ends: where each run of spaces begins, and the end of the match
    ends = [g.start() for g in _GAPS.finditer(m.group())] + [len(m.group())]
    for end in reversed(ends):
        candidate = _GAPS.sub("", m.group()[:end])
        if len(candidate) < 15:  # the shortest IBAN (Norway) has 15 characters
            return None
        if _bounded(text, at, at + end) and iban_valid(candidate):
            return at + end
    return None


def _bounded(text: str, s: int, e: int) -> bool:
    return not (s > 0 and text[s - 1].isalnum()) and not (e < len(text) and text[e].isalnum())


def _after_version_word(text: str, s: int) -> bool:
    before = text[max(0, s - 40) : s].lower().replace("-", " ")
    words = before.split()
    if not words:
        return False
    if words[-1] in ("to", "from"):  # "upgrade the router to 2.10.4.1", "bumped it from 1.2.3.4
        # to 1.2.3.5"; not "go to 8.8.4.4", "traffic from 81.2.69.160"
        return any(w in _UPDATE_WORDS or _DOTTED.fullmatch(w) for w in words[-4:-1])
    return words[-1] in _VERSION_WORDS or (before.endswith("v") and not before.endswith(" v"))


def _ip_ok(address: type[ipaddress.IPv4Address | ipaddress.IPv6Address], candidate: str) -> bool:
    try:
        address(candidate)
    except ValueError:
        return False
    return True


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
                if candidate.count(":") >= 2 and _ip_ok(ipaddress.IPv6Address, candidate):
                    cs = s + run.index(candidate)
                    ce = cs + len(candidate)
                    if _bounded(text, cs, ce):
                        spans.append(Span(cs, ce, "ip"))
                    break
        colon = text.find(":", max(colon + 1, end))
    return spans


_HEX_COLON = frozenset("0123456789abcdefABCDEF:.")
#: Every IPv6 address has two colons at most four hex digits apart ("::", ":db8:"): text
#: without that (prose, "Step 3: open") has none, whatever its other colons.
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]{2,45}")


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
