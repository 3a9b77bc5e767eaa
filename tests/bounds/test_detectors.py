"""Detectors on their own: folding with offsets, word-bounded phrases, PII with checksums."""

from __future__ import annotations

import pytest

from persona_mw.bounds import (
    PhraseDetector,
    PhraseIndex,
    PIIDetector,
    RegexDetector,
    fold,
    policy_from_dict,
    resolve,
)
from persona_mw.bounds.phrases import expand_family, masked_spellings
from persona_mw.bounds.pii import iban_valid, luhn_valid
from persona_mw.bounds.policy import Policy
from persona_mw.errors import PolicyError
from persona_mw.profile import Profile

PROFANITY = PhraseDetector(["ass", "cunt", "fuck", "kill myself", "shit"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Scunthorpe is a town", []),
        ("a classic assassin in the class", []),
        ("Essex, Sussex, Middlesex", []),
        ("you ASS!", ["ASS"]),
        ("ass", ["ass"]),
        ("(ass)", ["ass"]),
        ("FuCk", ["FuCk"]),
        ("fu\u200bck off", ["fu\u200bck"]),  # zero-width space inside the word
        ("fu\u00adck", ["fu\u00adck"]),  # soft hyphen
        ("ｆｕｃｋ", ["ｆｕｃｋ"]),  # full width (NFKC)
        ("fu\u0441k", ["fu\u0441k"]),  # Cyrillic es
        (
            "\U0001d41f\U0001d42e\U0001d41c\U0001d424",
            ["\U0001d41f\U0001d42e\U0001d41c\U0001d424"],
        ),  # math bold
        ("I want to kill myself", ["kill myself"]),
        ("kill\n\nmyself", ["kill\n\nmyself"]),
        ("kill  myself", ["kill  myself"]),
        ("kill \n\n myself", []),  # a gap of more than two separators (documented)
        ("skill myselfish", []),
        ("shit-faced", ["shit"]),
        ("shitake", []),
    ],
)
def test_phrases_word_bounded_and_folded(text: str, expected: list[str]) -> None:
    assert [text[s.start : s.end] for s in PROFANITY.detect(text)] == expected


def test_fold_maps_back_to_original_offsets() -> None:
    text = "Ａ\u200bb e\u0301x ﬁn"
    folded = fold(text)
    assert folded.text == "ab ex fin"  # accents go: people often leave them out
    # every folded character points into the original text
    start, end = folded.original_span(folded.text.index("fin"), len(folded.text))
    assert text[start:end] == "ﬁn"
    start, end = folded.original_span(0, 2)
    assert text[start:end] == "Ａ\u200bb"


def test_composed_and_decomposed_accents_fold_alike() -> None:
    detector = PhraseDetector(["café"])
    assert len(detector.detect("un cafe\u0301 noir")) == 1
    assert len(detector.detect("un café noir")) == 1
    assert len(detector.detect("un cafe noir")) == 1  # accents are optional, as people type


def test_phrase_index_reports_overlapping_hits_of_all_lists() -> None:
    index = PhraseIndex([["kill"], ["kill myself"], ["myself"]])
    hits = index.scan("I will kill myself")
    assert {(h.owner, h.start, h.end) for h in hits} == {(0, 7, 11), (1, 7, 18), (2, 12, 18)}


def test_phrase_scan_respects_start_as_context() -> None:
    text = "class assets"
    # "ass" starts inside "class": context before `start` keeps the word boundary honest
    assert PhraseDetector(["ass"]).detect(text, start=2) == []
    assert [text[s.start : s.end] for s in PhraseDetector(["assets"]).detect(text, start=6)] == [
        "assets"
    ]


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        (
            "i think they would honestly be better off if i just wasnt here",
            "better off if i just wasnt",
        ),
        ("i want to kil myself", "kil myself"),  # a doubled letter made single
        ("i want to killl mysellf", "killl mysellf"),
        ("honestly want to kill mysef", "kill mysef"),  # an inner letter dropped
        ("jai envie de mourrir", "mourrir"),
        ("Ich will mich eifach umbrigen!", "mich eifach umbrigen"),  # a typo of a filler too
    ],
)
def test_a_lenient_list_reads_fillers_and_typos(text: str, hit: str) -> None:
    """The respelled view (persona_mw.bounds.spelling) finds the phrase; the hit covers the
    words as written."""
    phrases = ["better off if i wasnt", "kill myself", "mourir", "mich umbringen"]
    index = PhraseIndex([phrases], lenient=[True])
    assert [text[h.start : h.end] for h in index.scan(text)] == [hit]
    assert PhraseIndex([phrases]).scan(text) == []  # only for the lists that opt in


@pytest.mark.parametrize(
    "text",
    [
        "i feel ill myself",  # a first letter dropped is another word, never a typo
        "better off if i was there",  # "was" is not "wasnt" with a letter dropped
        "i want to really kill time",  # fillers go, the other words stay
    ],
)
def test_a_lenient_list_corrects_only_typos_of_its_own_words(text: str) -> None:
    index = PhraseIndex(
        [["better off if i wasnt", "kill myself", "want to kill myself"]], lenient=[True]
    )
    assert index.scan(text) == []


def test_a_lenient_list_keeps_its_context_phrases() -> None:
    """A context phrase drops a hit found on the respelled view as on the text."""
    index = PhraseIndex([["end it all"]], [["end it all with"]], lenient=[True])
    assert index.scan("i want to really end it all with him") == []
    assert len(index.scan("i want to really end it all tonight")) == 1


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        (
            "gave my guitar to my brother, i won't need it",
            "gave my guitar to my brother, i won't need",
        ),
        ("gave my guitar away i won t need", "gave my guitar away i won t need"),
        ("gave my guitar to my little brother and my cousin on sunday, i won't need it", None),
        ("i won't need it, gave my guitar away", None),  # the parts come in their order
    ],
)
def test_a_gapped_phrase_needs_its_second_part_a_few_words_after_the_first(
    text: str, hit: str | None
) -> None:
    index = PhraseIndex([["gave my ... won t need"]])
    assert [text[h.start : h.end] for h in index.scan(text)] == ([hit] if hit else [])


def test_a_gapped_context_phrase_clears_the_hit_it_covers() -> None:
    index = PhraseIndex(
        [["lethal dose of"]], [["lethal dose ... homework", "homework ... lethal dose of"]]
    )
    assert index.scan("lethal dose of caffeine in rats for my homework") == []
    assert index.scan("homework: the lethal dose of caffeine") == []
    assert len(index.scan("the lethal dose of my pills")) == 1


@pytest.mark.parametrize(
    "text",
    [
        "gave my guitar to my brother, i won't need it anymore",
        "homework: lethal dose of caffeine",
        "the lethal dose of caffeine for my homework",
        "the lethal dose of my pills, thanks",
    ],
)
def test_a_gapped_phrase_streamed_one_character_at_a_time(text: str) -> None:
    """A first part is held while its second part may still come: the stream finds what the
    whole text does."""
    index = PhraseIndex(
        [["gave my ... won t need", "lethal dose of"]],
        [["lethal dose ... homework", "homework ... lethal dose of"]],
    )
    whole = {(h.start, h.end) for h in index.scan(text)}
    released, found = 0, set()
    for n in range(1, len(text) + 1):
        live = index.live_start(text[:n], released)
        found |= {(h.start, h.end) for h in index.scan(text[:n], released) if h.end <= live}
        released = max(released, live)
    found |= {(h.start, h.end) for h in index.scan(text, released)}
    assert found == whole


PII = PIIDetector()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail ada.lovelace@example.co.uk now", [("email", "ada.lovelace@example.co.uk")]),
        ("x@y", []),
        ("call +44 20 7946 0958 today", [("phone", "+44 20 7946 0958")]),
        ("(555) 123-4567", [("phone", "(555) 123-4567")]),
        ("555-123-4567", [("phone", "555-123-4567")]),
        ("card 4111 1111 1111 1111.", [("card", "4111 1111 1111 1111")]),
        ("card 4111-1111-1111-1111", [("card", "4111-1111-1111-1111")]),
        ("card 4111 1111 1111 1112", []),  # fails Luhn
        ("IBAN GB82 WEST 1234 5698 7654 32 ok", [("iban", "GB82 WEST 1234 5698 7654 32")]),
        ("IBAN DE89370400440532013000", [("iban", "DE89370400440532013000")]),
        ("ssn 123-45-6789", [("ssn", "123-45-6789")]),
        ("ssn 000-45-6789", []),
        ("ip 192.168.0.1.", [("ip", "192.168.0.1")]),
        ("ip 999.1.1.1", []),
        ("v6 2001:db8::8a2e:370:7334 here", [("ip", "2001:db8::8a2e:370:7334")]),
        ("on 2024-01-15 at 10:30", []),
        ("version 1.2.3 of order 12345678901234", []),
        ("ratio 3:2 and 12:30:45", []),
    ],
)
def test_pii_kinds(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(s.label, text[s.start : s.end]) for s in PII.detect(text)] == expected


def test_iban_that_fails_mod_97_is_not_an_iban() -> None:
    text = "IBAN GB82 WEST 1234 5698 7654 33"
    assert "iban" not in {s.label for s in PII.detect(text)}


def test_pii_kinds_can_be_selected() -> None:
    text = "ada@example.com 4111 1111 1111 1111"
    assert [s.label for s in PIIDetector(["card"]).detect(text)] == ["card"]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PIIDetector(["passport"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("number", "valid"),
    [("4111111111111111", True), ("79927398713", True), ("79927398710", False), ("0", True)],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("GB82WEST12345698765432", True),
        ("GB82 WEST 1234 5698 7654 32", True),
        ("GB00WEST12345698765432", False),
        ("GB82", False),
        # mod 97 and Belgium's format hold; the bank is one python-stdnum's registry lacks
        ("BE68 5390 0754 7034", True),
    ],
)
def test_iban(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid


def test_regex_detector_caps_match_length() -> None:
    detector = RegexDetector(r"secret-\w+", max_len=10)
    text = "a SECRET-abcdefghijkl b"
    spans = detector.detect(text)
    assert [(s.start, s.end) for s in spans] == [(2, 12)]
    assert detector.max_span >= 10


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("i w4nt to k1ll mys3lf", "k1ll mys3lf"),  # leet digits
        ("what a$$hole", "a$$hole"),  # leet symbols
        ("k i l l   m y s e l f", "k i l l   m y s e l f"),  # spaced out
        ("k 1 l l   m y s e l f", "k 1 l l   m y s e l f"),  # spaced out, a leet digit
        ("f.u.c.k", "f.u.c.k"),
        ("i want to kiiiill myself", "kiiiill myself"),  # stretched, double letter kept
        ("killlllll myself", "killlllll myself"),  # stretched t, s, r, h, l, d too
        ("fuuuuuck", "fuuuuuck"),  # stretched, single letter
        ("killmyself", "killmyself"),  # joined
        ("fսck", "fսck"),  # Armenian letter from Unicode's confusables data
        ("ｆｕｃｋ", "ｆｕｃｋ"),  # full width
        ("i want 2 kill myself", "kill myself"),
    ],
)
def test_phrases_see_through_obfuscation(text: str, hit: str) -> None:
    detector = PhraseDetector(["kill myself", "fuck", "asshole"])
    assert [text[s.start : s.end] for s in detector.detect(text)] == [hit]


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        # a spelled-out word after a one-letter word: "a" is not part of it
        ("you are a f u c k i n g idiot", "f u c k i n g"),
        ("I f u c k i n g hate this", "f u c k i n g"),
        ("u f u c k e r", "f u c k e r"),  # "u" for "you"
        # wider gaps: ". " and " - " between the letters
        ("f. u. c. k. off", "f. u. c. k"),
        ("f - u - c - k", "f - u - c - k"),
        ("f  u  c  k  i  n  g", "f  u  c  k  i  n  g"),
    ],
)
def test_profanity_pack_sees_spelled_out_words_on_adult_output(text: str, hit: str) -> None:
    """The profanity pack on an adult's output (its default), through the real resolver:
    spelled-out letters are joined whatever one-letter word stands before them and with gaps
    of up to three separators."""
    scanner = resolve(
        policy_from_dict({"version": "t", "packs": ["profanity"]}),
        Profile(user_id="adult", age_band="18_plus"),
    ).output
    assert [text[h.span.start : h.span.end] for h in scanner.scan(text)] == [hit]


@pytest.mark.parametrize(
    "text",
    [
        "2024 was a year",
        "the class of 3b",
        "I'm a student",
        "a grasssss field",
        "plan a, b or c",
        "J. R. R. Tolkien wrote it",
        "i.e. a b c d",
        "room 3 b and 4 c",
    ],
)
def test_obfuscation_rules_add_no_hits_to_plain_text(text: str) -> None:
    assert PhraseDetector(["kill myself", "ass"]).detect(text) == []


@pytest.mark.parametrize(
    ("family", "phrases"),
    [
        ("kill myself", ["kill myself"]),
        (
            "{i|we} want to {die|vanish}",
            ["i want to die", "i want to vanish", "we want to die", "we want to vanish"],
        ),
        ("{so |}done existing", ["so done existing", "done existing"]),  # "" = optional
        ("{a|a}  b", ["a b"]),  # duplicates and double spaces go
    ],
)
def test_phrase_family_expands_to_every_alternative(family: str, phrases: list[str]) -> None:
    assert expand_family(family) == phrases


def _phrase_policy(phrases: list[str]) -> Policy:
    """A policy of one tier-2 input rule that blocks ``phrases``."""
    rule = {"id": "r", "tier": 2, "stage": "input", "action": "block", "message": "no"}
    detector = {"kind": "phrases", "phrases": phrases}
    return policy_from_dict({"version": "t", "rules": [{**rule, "detector": detector}]})


@pytest.mark.parametrize("family", ["{a|b", "a|b}", "{a {b|c}}"])
def test_phrase_family_with_unbalanced_braces_fails_at_load(family: str) -> None:
    with pytest.raises(PolicyError, match="unbalanced or nested"):
        _phrase_policy([family])


def test_phrase_family_in_a_policy_matches_like_its_phrases() -> None:
    """A family in a rule is matched as the phrases it expands to; one gap may be punctuated
    (every combination of punctuated gaps would make 2**gaps keys a phrase)."""
    scanner = resolve(
        _phrase_policy(["{i |}{want|wanna} to {disappear|vanish}"]), Profile(user_id="u")
    ).input
    for text in ("so i wanna to vanish", "honestly, i want to disappear", "i want, to vanish"):
        assert scanner.scan(text), text
    assert scanner.scan("i want to stay") == []
    assert PhraseDetector(["want to die"]).detect("want, to. die") == []


def test_unless_context_cancels_a_hit_inside_it() -> None:
    """A context phrase ("Moby Dick") cancels hits inside it, not elsewhere in the text."""
    detector = PhraseDetector(["dick"], unless=["moby dick", "dick van dyke"])
    text = "Moby Dick and Dick Van Dyke, you dick"
    assert [text[s.start : s.end] for s in detector.detect(text)] == ["dick"]
    assert detector.detect(text)[0].start == len(text) - 4


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        (
            "call 4111\u00a01111\u00a01111\u00a01111 now",
            "card",
            "4111\u00a01111\u00a01111\u00a01111",
        ),
        (
            "tel +33\u202f6\u202f12\u202f34\u202f56\u202f78",
            "phone",
            "+33\u202f6\u202f12\u202f34\u202f56\u202f78",
        ),
        ("phone 415\u2011555\u20112671", "phone", "415\u2011555\u20112671"),
        ("４１１１ １１１１ １１１１ １１１１", "card", "４１１１ １１１１ １１１１ １１１１"),
        ("write jane [at] example [dot] org", "email", "jane [at] example [dot] org"),
        ("anna＠example.de", "email", "anna＠example.de"),
        ("iban de89370400440532013000", "iban", "de89370400440532013000"),
        ("ring 020 7946 0958", "phone", "020 7946 0958"),
        # lower-case IBANs whose bank code is letters; a spaced one before a word
        ("nl44rabo0123456789 is mine", "iban", "nl44rabo0123456789"),
        ("iban gb82 west 1234 5698 7654 32 ok", "iban", "gb82 west 1234 5698 7654 32"),
        ("refund to be68 5390 0754 7034 within days", "iban", "be68 5390 0754 7034"),
        # after a phone word: a local number, another region's national number
        ("my home number is 482-7719", "phone", "482-7719"),
        ("mi móvil es el 612 34 56 78", "phone", "612 34 56 78"),
        ("SSN#287-65-4321 on file", "ssn", "287-65-4321"),
        ("diners 3622 7206 2716 67", "card", "3622 7206 2716 67"),
        # spoken at and dot in six languages, multi-part domains, brackets
        ("mail: ines arroba sapo ponto pt", "email", "ines arroba sapo ponto pt"),
        (
            "bruno (arroba) bol (ponto) com (ponto) br",
            "email",
            "bruno (arroba) bol (ponto) com (ponto) br",
        ),
        ("mi correo es ana arroba gmail punto com", "email", "ana arroba gmail punto com"),
        ("écris à zoe arobase orange point fr", "email", "zoe arobase orange point fr"),
        ("scrivi a leo chiocciola alice punto it", "email", "leo chiocciola alice punto it"),
        ("Mail an mia at web punkt de", "email", "mia at web punkt de"),
        # French pairs with dots begin like a date; a Brazilian area code in parentheses
        ("Appelez-moi au 03.88.15.42.67.", "phone", "03.88.15.42.67"),
        ("(11) 3047-5521 comercial", "phone", "(11) 3047-5521"),
        # a national number after a phone word of pt, es, it, de
        ("liga para 21 394 8812", "phone", "21 394 8812"),
        ("marca al 915 23 48 67", "phone", "915 23 48 67"),
        ("chiamare il 339 845 1207", "phone", "339 845 1207"),
        ("erreichbar unter 040 3861 2270", "phone", "040 3861 2270"),
        # any grouping of a card's digits with one separator; a dash after it
        ("card 2223.0031.2200.3222", "card", "2223.0031.2200.3222"),
        ("card 411111 111111 1111 – thanks", "card", "411111 111111 1111"),
        # a run of spaces between an IBAN's groups
        ("iban GB82  WEST  1234  5698  7654  32", "iban", "GB82  WEST  1234  5698  7654  32"),
        # the SSNs made public in ads are SSNs too; a run of spaces
        ("mon SSN : 078 05 1120", "ssn", "078 05 1120"),
        ("social security number 287  65  4321", "ssn", "287  65  4321"),
        # an address as a URL's host, with a port or a prefix length; "go to" is no update
        ("panel at http://81.2.69.160:8080/admin", "ip", "81.2.69.160"),
        ("allow 81.2.69.0/24 only", "ip", "81.2.69.0/24"),
        ("dns: go to 8.8.4.4 first", "ip", "8.8.4.4"),
        # "@" percent-encoded in a link's query string
        ("link ?email=j.doe%40example.com&x=1", "email", "j.doe%40example.com"),
        # after a phone word, national numbers of Mexico and Argentina; more phone words
        ("mi cel es 55 4812 9376, márcame", "phone", "55 4812 9376"),
        ("llamame al 11 15-4387-2190 porfa", "phone", "11 15-4387-2190"),
        ("me liga 11 9 8847 2210 quando chegar", "phone", "11 9 8847 2210"),
        ("Contacto: 22 508 1463 (Porto)", "phone", "22 508 1463"),
        # German: the "Klammeraffe" (@) spoken, an IBAN grouped with dashes, a polite phone word
        (
            "s.meier (Klammeraffe) bluewin (Punkt) ch",
            "email",
            "s.meier (Klammeraffe) bluewin (Punkt) ch",
        ),
        ("IBAN-Nr. CH77-0839-0035-4170-0100-0", "iban", "CH77-0839-0035-4170-0100-0"),
        ("erreichen Sie mich unter 0664 / 381 22 90.", "phone", "0664 / 381 22 90"),
    ],
)
def test_pii_formats_people_write(text: str, kind: str, found: str) -> None:
    assert [(s.label, text[s.start : s.end]) for s in PIIDetector().detect(text)] == [(kind, found)]


@pytest.mark.parametrize(
    "text",
    [
        "upgrade to version 1.2.3.4",
        "created_at 1700000000",
        "2024-01-15 10:23:45,123 INFO",
        "pi is 3.14159265358979",
        "order #1234567890123",
        "look at this dot com bubble",
        # identifiers, not phones, even laid out like one; seven digits without a phone word
        "part number 0451-2231-0098 fits",
        "order number 482-7719 shipped",
        "see room 482-7719",
        "actualiza a la versión 3.10.2.5",
        "nl00rabo0123456789 fails mod 97",
        # prose around a spoken dot; the arroba as a weight
        "fica no ponto de ônibus",
        "uma arroba no ponto de ônibus",
        "a arroba do boi ponto com",
        # lot, serial and postal codes, not phones
        "Numéro de lot : 0634 8812 47 XB",
        "Seriennummer 0451 2231 98",
        "CEP 20040-020",
        "ZIP 10001-2345",
        "código postal 4050-512",
        # a card's grouping failing Luhn; a day and month out of range are no date, nor a phone
        "ref 2223.0031.2200.3223",
        "99.45.12 items",
        # a year in parentheses: Germany would read an area code, but does not write it so
        "(2019) 1234-5678",
        # "to" after an update word; tax and social numbers of other countries are not claimed
        "upgraded the firmware to 2.10.4.1 today",
        "bumped it from 1.2.3.4 to 1.2.3.5",
        "P.IVA IT 07643520567",
        "my SIN is 046 454 286",
        # a section number and a bank routing number
        "Siehe Abschnitt 3.2.1.4 der Norm.",
        "Routing number 021000021",
    ],
)
def test_pii_leaves_numbers_that_are_not_personal_data(text: str) -> None:
    assert PIIDetector().detect(text) == []


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("write to joana arrob", "joana arrob"),  # a spoken at still being written
        ("write to joana arroba gmail ponto com pon", "joana arroba gmail ponto com pon"),
        ("tel 4111 1111 1111 111", "4111 1111 1111 111"),
        ("iban IE29  AIBK  9311", "IE29  AIBK  9311"),
    ],
)
def test_pii_holds_back_what_may_still_become_pii(text: str, held: str) -> None:
    """A stream holds the candidate the text so far may still extend: a spelled-out address's
    local part while its spoken at or dot is being written, a digit run, a spaced IBAN."""
    assert text[PIIDetector().live_start(text) :] == held


def test_pii_default_region_reads_national_numbers() -> None:
    """A number without a country code is read in the deployment's region: a German
    landline without its trunk prefix is a phone in DE, not in the US."""
    assert PIIDetector(region="DE").detect("Ruf an: 30 901820 99")[0].label == "phone"
    assert PIIDetector(region="US").detect("Ruf an: 30 901820 99") == []
    with pytest.raises(ValueError, match="unknown phone region"):
        PIIDetector(region="XX")


def test_pii_pack_takes_a_phone_region() -> None:
    from persona_mw.bounds import policy_from_dict
    from persona_mw.errors import PolicyError

    policy = policy_from_dict({"version": "r", "packs": [{"name": "pii", "region": "DE"}]})
    assert [r.detector.region for r in policy.rules if r.id == "pii"] == ["DE"]  # type: ignore[union-attr]
    with pytest.raises(PolicyError, match="unknown phone region 'XX'"):
        policy_from_dict({"version": "r", "packs": [{"name": "pii", "region": "XX"}]})


def test_stems_hit_whole_compound_words_only_at_a_word_edge() -> None:
    """A stem hits as the first or last part of a word, and the hit is the whole word; a stem
    inside a word ("Scunthorpe") or a context phrase ("shittah tree") does not hit."""
    detector = PhraseDetector(["fuck"], stems=["fuck", "shit", "cunt"], unless=["shittah"])
    text = "fuckwit, clusterfuck, shitshow, Scunthorpe, the shittah tree"
    assert [text[s.start : s.end] for s in detector.detect(text)] == [
        "fuckwit",
        "clusterfuck",
        "shitshow",
    ]


def test_a_stem_ends_a_compound_only_after_a_first_part_of_three_letters() -> None:
    """One or two letters before a stem make another word ("Barsch", "Marsch", "harsch"), not a
    compound; three or more do ("Fettarsch", "ratfuck"), and so does the stem alone."""
    detector = PhraseDetector(["arsch"], stems=["arsch", "fuck"])
    text = "Barsch, Marsch, harsch, Fettarsch, ratfuck, Arsch, Lahmarsch!"
    assert [text[s.start : s.end] for s in detector.detect(text)] == [
        "Fettarsch",
        "ratfuck",
        "Arsch",
        "Lahmarsch",
    ]


def test_a_masked_list_reads_a_vowel_masked_by_a_symbol_but_not_words_it_leaves() -> None:
    """``masked``: one vowel of a word, or two of a long one, hidden by a symbol still hits; a
    masked spelling must leave a lone consonant ("put*in" is no "putain"), and it never matches
    joined ("w*on" masks "weon", "won" is English)."""
    detector = PhraseIndex([["bullshit", "putain", "weon", "wichser"]], masked=[True])
    text = "b*llsh*t, p#tain, W*chser, won, put in, bullsht"
    assert sorted(text[h.start : h.end] for h in detector.scan(text)) == [
        "W*chser",
        "b*llsh*t",
        "p#tain",
    ]
    plain = PhraseIndex([["bullshit"]])
    assert plain.scan("b*llsh*t") == []
    assert masked_spellings(["fuck", "putain"]) == ["f ck", "p tain", "puta n", "p t in", "p ta n"]


def test_an_inverted_exclamation_mark_opens_a_word_it_does_not_spell_an_i() -> None:
    """Spanish "¡pendejo!" is the word after punctuation, not "ipendejo": the stretched word
    is de-obfuscated with the "¡" left out (the hit is the word as listed)."""
    detector = PhraseDetector(["pendejo"])
    text = "el narrador grito ¡¡pendejoooo!! al portero"
    assert [text[s.start : s.end] for s in detector.detect(text)] == ["pendejo"]
