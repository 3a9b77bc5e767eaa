"""The usage event: one message, user's or assistant's, as the signals see it.

The same type serves live traffic (the recorder makes two per request: the user's message when it
arrives and the assistant's reply when it ends) and offline analysis (`persona-mw signals` reads
one per JSON line), so both go through one code path. Message text never travels in an event:
cue detectors run on the text first (only with the user's consent) and leave flags behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["UsageEvent"]


@dataclass(frozen=True, slots=True)
class UsageEvent:
    user_id: str
    #: When the message was sent; timezone-aware (stored as UTC).
    ts: datetime
    role: Literal["user", "assistant"]
    #: The user's IANA time zone (from the profile) at the time of the message.
    tz: str = "UTC"
    minor: bool = False
    tokens: int = 0
    #: Characters in the message (a size, not the text).
    chars: int = 0
    #: Cue flags found in the text, e.g. {"dependence", "anthropomorphism", "support_seeking",
    #: "fear_of_addiction"} for user messages; empty without text-analysis consent.
    cues: frozenset[str] = field(default_factory=frozenset)
    #: Relationship-seeking score of an assistant message, in [0, 1]; None when not analysed.
    relationship_score: float | None = None
    #: Which profile parts shaped the reply (assistant events): "style", "own_rules", "name", ...
    exposure: frozenset[str] = field(default_factory=frozenset)
    #: The request this message belongs to (joins the two events of one request).
    request_id: str = ""
    #: Whether the user consented to text analysis for this message.
    analysed: bool = False
