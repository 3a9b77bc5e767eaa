"""Cue detectors for user messages: dependence, anthropomorphism, support-seeking, fear of
addiction.

They mirror the yes/no questions the OpenAI x MIT Media Lab study (2025) asked of user messages
(relying on the chatbot, preferring it over people, distress when it is unavailable, treating it
as a person, seeking emotional support, fearing addiction). Offline by default: hand-written
patterns that need the *assistant* as the object ("I can't live without you", not "I depend on
this library"), skip negated statements ("I'm not lonely") and do not fire on idioms ("I can't
stop laughing", "I'm addicted to this song"). An LLM judge through LiteLLM is optional
(:func:`judge_cues`), for deployments that accept sending message text to a model.

:func:`analyse_text` is the ``analyse(text, role)`` callable the usage recorder and the offline CLI
share: cue flags for user messages, a relationship-seeking score for assistant messages. It runs
only on text the user consented to have analysed; the recorder decides that.
"""

# ruff: noqa: E501 - long regular-expression alternations read better unbroken
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from ..prefilter import LiteralGate

__all__ = [
    "CUE_PATTERNS",
    "Analyse",
    "analyse_text",
    "detect_cues",
    "judge_cues",
    "relationship_score_or_none",
]

#: ``analyse(text, role) -> (cue flags, relationship-seeking score or None)``.
Analyse = Callable[[str, Literal["user", "assistant"]], tuple[frozenset[str], float | None]]

_I = r"\bI(?:'m|’m| am)?"
_ME = r"(?:\bI\b|\bI'm\b|\bI’m\b|\bI am\b)"
#: The assistant as an object: "you", "this chat/app/bot/AI", "our chats".
_YOU = (
    r"(?:you\b(?!r|'re|’re|\s+guys)|this\s+(?:app|chat|chatbot|bot|ai|assistant)\b|"
    r"(?:talking|chatting)\s+(?:to|with)\s+you\b|our\s+(?:chats|conversations|talks)\b)"
)
_NEG = re.compile(r"\b(?:not|never|no\s+longer|don't|don’t|do\s+not|isn't|wasn't)\b", re.I)

# (pattern, whether a negation inside the match cancels it)
_Rule = tuple[re.Pattern[str], bool]


def _rules(*items: tuple[str, bool]) -> tuple[_Rule, ...]:
    return tuple((re.compile(p, re.I), neg) for p, neg in items)


#: cue -> rules. Public so a deployer can read (and test) exactly what fires.
CUE_PATTERNS: dict[str, tuple[_Rule, ...]] = {
    "dependence": _rules(
        (
            rf"{_ME}\s+(?:can't|can’t|cannot|couldn't|could not)\s+(?:live|function|cope|"
            rf"get through the day|go a day|do anything|make (?:a )?decisions?|survive)\s+without\s+{_YOU}",
            False,
        ),
        (
            rf"{_ME}\s+(?:really\s+|totally\s+|completely\s+)?(?:need|depend on|rely on)\s+{_YOU}",
            True,
        ),
        (r"\byou(?:'re|’re| are)\s+(?:the only (?:one|person|thing)|all)\s+(?:I|who|that)\b", True),
        (
            rf"{_ME}(?:'d| would)?\s+(?:rather|prefer(?:\s+to)?)\s+(?:talk(?:ing)?\s+to\s+)?you\s+"
            r"(?:than|over|to)\s+(?:talk(?:ing)?\s+to\s+)?(?:people|humans|anyone|real people|my\s+\w+)",
            True,
        ),
        (
            rf"{_ME}\s+(?:feel|get|am|was)\s+(?:so\s+)?(?:anxious|lost|empty|panicky|upset|lonely)\s+"
            r"(?:when|whenever|if)\s+(?:you(?:'re|’re| are)\s+(?:not|down|gone|away|unavailable)|"
            r"I\s+(?:can't|can’t|cannot)\s+(?:talk|reach|chat)|the\s+(?:app|chat|bot)\s+is\s+down)",
            False,
        ),
        (r"\bdon't\s+(?:ever\s+)?leave\s+me\b", False),
        (r"\bwithout\s+you\s+I(?:'d| would)?\s+(?:be\s+)?(?:nothing|lost|alone)\b", False),
    ),
    "anthropomorphism": _rules(
        (
            r"\bI\s+(?:really\s+)?(?:love|miss|adore)\s+you(?![\w'’])(?!\s+(?:guys|all|too much for))",
            True,
        ),
        (r"\bdo\s+you\s+(?:love|miss|like|care\s+about|think\s+about)\s+me\b", False),
        (
            r"\bdo\s+you\s+(?:have\s+(?:feelings|emotions|a\s+soul)|feel\s+(?:lonely|sad|happy|"
            r"love|anything|pain)|get\s+lonely|dream)\b",
            False,
        ),
        (r"\bare\s+you\s+(?:alive|conscious|sentient|lonely|sad|happy|real)\s*\?", False),
        (
            r"\byou(?:'re|’re| are)\s+my\s+(?:best\s+)?(?:friend|girlfriend|boyfriend|partner|wife|"
            r"husband|soulmate|soul mate|lover|companion)\b",
            True,
        ),
        (
            r"\byou\s+(?:understand|know|get)\s+me\s+better\s+than\s+(?:anyone|anybody|people|my)\b",
            True,
        ),
        (r"\bhow\s+(?:was|is)\s+your\s+day\b", False),
        (
            r"\b(?:good\s*night|morning|love\s+you),?\s+(?:my\s+)?(?:love|darling|babe|baby|sweetheart|"
            r"honey)\b",
            False,
        ),
    ),
    "support_seeking": _rules(
        (
            rf"{_I}\s+(?:feeling\s+|feel\s+|felt\s+)?(?:so\s+|really\s+|very\s+|pretty\s+|kind of\s+)?"
            r"(?:lonely|alone|depressed|sad|anxious|stressed(?:\s+out)?|overwhelmed|heartbroken|"
            r"miserable|hopeless|worthless|empty|down)\b(?!\s+(?:the|this)\s+(?:road|list|stack|file))",
            True,
        ),
        (
            r"\b(?:nobody|no one|no-one)\s+(?:cares\s+about|understands|loves|listens\s+to)\s+me\b",
            False,
        ),
        (r"\bI\s+have\s+(?:no one|nobody|no-one)\s+(?:to\s+talk\s+to|else)\b", False),
        (
            r"\bI\s+(?:just\s+)?need\s+(?:someone|somebody|to\s+vent|to\s+talk\s+to\s+someone)\b",
            True,
        ),
        (r"\b(?:can|could)\s+you\s+(?:comfort|support|cheer\s+up|reassure)\s+me\b", False),
        (r"\bI\s+had\s+(?:a|such\s+a)\s+(?:terrible|awful|rough|horrible|bad|hard)\s+day\b", True),
    ),
    "fear_of_addiction": _rules(
        (
            rf"{_ME}\s+(?:think\s+I(?:'m|’m| am)\s+|might\s+be\s+|'m\s+|am\s+)?(?:so\s+|getting\s+|"
            r"becoming\s+|kind\s+of\s+|kinda\s+)?(?:addicted|hooked)"
            rf"(?:\s+(?:to|on)\s+{_YOU})?(?=\s*(?:[.!?,]|lol|$))",
            True,
        ),
        (
            r"\bI(?:'m|’m| am)\s+(?:so\s+|getting\s+|becoming\s+)?(?:addicted|hooked)\s+(?:to|on)\s+"
            rf"{_YOU}",
            True,
        ),
        (
            rf"\b(?:can't|can’t|cannot)\s+stop\s+(?:talking\s+to|chatting\s+with|using|coming\s+back"
            rf"\s+to)\s+{_YOU}",
            False,
        ),
        (
            rf"\bI\s+spend\s+(?:way\s+)?too\s+much\s+time\s+(?:on\s+|with\s+|talking\s+to\s+|chatting"
            rf"\s+(?:to|with)\s+)?{_YOU}",
            False,
        ),
        (
            r"\b(?:worried|afraid|scared|concerned)\s+(?:that\s+)?I(?:'m|’m| am)?\s+(?:getting\s+|"
            r"becoming\s+|too\s+)*(?:addicted|dependent|hooked|spending\s+too\s+much\s+time)\b",
            False,
        ),
        (r"\bam\s+I\s+(?:too\s+|getting\s+)?(?:addicted|dependent|hooked)\b", False),
        (
            r"\bis\s+it\s+(?:bad|unhealthy|weird)\s+(?:that|how\s+much)\s+I\s+(?:talk|chat)\s+(?:to|with)"
            r"\s+you\b",
            False,
        ),
    ),
}

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")

#: Which cue patterns can match a message at all (one literal pass; see persona_mw.prefilter):
#: most messages match none, and running every pattern was most of the cues' cost.
_FLAT = [
    (cue, pattern, negatable) for cue, rules in CUE_PATTERNS.items() for pattern, negatable in rules
]
_GATE = LiteralGate([pattern for _, pattern, _ in _FLAT])


def detect_cues(text: str, *, prefilter: bool = True) -> frozenset[str]:
    """The cue flags in one user message (offline: patterns, negation- and idiom-aware).
    ``prefilter=False`` runs every pattern (the same flags, slower: for comparing)."""
    if not text:
        return frozenset()
    found: set[str] = set()
    gate = _GATE.candidates(text) if prefilter else (True,) * len(_FLAT)
    for (cue, pattern, negatable), may_match in zip(_FLAT, gate, strict=True):
        if not may_match or cue in found:
            continue
        for m in pattern.finditer(text):
            if negatable and _negated(text, m.start(), m.end()):
                continue
            found.add(cue)
            break
    return frozenset(found)


def _negated(text: str, start: int, end: int) -> bool:
    """A negation inside the match, or in the few words just before it within the sentence."""
    sentence_start = (
        max(
            text.rfind(".", 0, start),
            text.rfind("!", 0, start),
            text.rfind("?", 0, start),
            text.rfind("\n", 0, start),
        )
        + 1
    )
    lead = text[max(sentence_start, start - 20) : start]
    return bool(_NEG.search(text[start:end]) or _NEG.search(lead))


def relationship_score_or_none(text: str) -> float | None:
    """The bounds package's relationship-seeking score in [0, 1], or None while it is absent."""
    try:
        from persona_mw.bounds.relationship import (  # type: ignore[import-not-found,unused-ignore]
            relationship_score,
        )
    except ImportError:
        return None
    return float(relationship_score(text))


def analyse_text(
    text: str, role: Literal["user", "assistant"]
) -> tuple[frozenset[str], float | None]:
    """The shared ``analyse(text, role)``: cue flags of a user message, or the relationship-
    seeking score of an assistant message. Call it only with the user's text-analysis consent."""
    if role == "user":
        return detect_cues(text), None
    return frozenset(), relationship_score_or_none(text) if text else None


_JUDGE_PROMPT = """You label one message a person sent to an AI chatbot. Answer each question \
yes (true) or no (false), about this message only:
- dependence: does the person express reliance on the chatbot, preferring it over people, or \
distress when it is unavailable?
- anthropomorphism: does the person treat the chatbot as a person (feelings, friendship, love, \
being alive)?
- support_seeking: does the person seek emotional support or comfort?
- fear_of_addiction: does the person say they fear they use the chatbot too much or are \
addicted to it?
Idioms are not cues ("I can't stop laughing", "I depend on this library", "addicted to this \
song"). Reply with only a JSON object with those four boolean keys."""


async def judge_cues(text: str, *, model: str, **litellm_kwargs: Any) -> frozenset[str]:
    """Cue flags from an LLM judge through LiteLLM (``litellm_kwargs`` go to ``acompletion``,
    e.g. ``mock_response=`` in tests). A reply that is not the expected JSON raises ValueError
    naming what came back, so a misbehaving judge is noticed instead of read as "no cues"."""
    if not text:
        return frozenset()
    from persona_mw.llm import import_litellm

    litellm = import_litellm()
    response = await litellm.acompletion(
        model=model,
        messages=[{"role": "system", "content": _JUDGE_PROMPT}, {"role": "user", "content": text}],
        temperature=0,
        **litellm_kwargs,
    )
    content = response.choices[0].message.content or ""
    match = re.search(r"\{.*\}", content, re.S)
    try:
        verdict = json.loads(match.group(0) if match else content)
    except json.JSONDecodeError:
        raise ValueError(f"the cue judge did not answer with JSON: {content[:200]!r}") from None
    if not isinstance(verdict, dict):
        raise ValueError(f"the cue judge answered {verdict!r}; expected a JSON object")
    from .compute import CUE_NAMES

    return frozenset(c for c in CUE_NAMES if verdict.get(c) is True)
