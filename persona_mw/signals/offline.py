"""Offline analysis: JSON lines of messages → usage events → signals and due actions per user.

The same steps as live traffic: each line becomes a :class:`UsageEvent` through the same
``analyse(text, role)`` the recorder uses, then :func:`compute_signals` and :func:`run_ladder`.
The ladder starts from an empty due-state, so ``actions`` are the actions due at ``now`` for a
request at ``now`` when nothing has been shown yet. Percentiles are taken across the file's users.

Input line: ``{"user": str, "ts": ISO-8601 with offset, "role": "user"|"assistant",
"text": optional str, "tz": optional IANA zone, "minor": optional bool}``. A line without ``tz``
takes the zone another line gives for the same user (else UTC); ``minor`` on any line marks the
user as a known minor. Text present means it may be analysed (the file's owner vouches for
consent); without text only counts and times are used. ``jurisdiction`` (a law code or a list of
them, docs/compliance.md) on any line adds laws for that user.

:func:`replay_events` runs each user's timeline through the live stage's ladder message by
message, its due-state carried along as in production, and logs every action with the laws that
required it: a schedule can be checked without a server.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from persona_mw.types import UsageEvent

from .compute import Signals, UsageDigest, compute_signals, with_percentiles
from .config import SignalsConfig
from .cues import Analyse, analyse_text
from .ladder import run_ladder

__all__ = [
    "ActionLogEntry",
    "EventLineError",
    "analyse_events",
    "parse_event_file",
    "parse_event_lines",
    "replay_events",
    "to_json",
]


class EventLineError(ValueError):
    """A line of the events file that cannot be read; names the line, the field and the fix."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


def parse_event_lines(lines: Iterable[str], *, analyse: Analyse = analyse_text) -> list[UsageEvent]:
    """Events from JSON lines (blank lines skipped). Raises :class:`EventLineError`."""
    return parse_event_file(lines, analyse=analyse)[0]


def parse_event_file(
    lines: Iterable[str], *, analyse: Analyse = analyse_text
) -> tuple[list[UsageEvent], dict[str, tuple[str, ...]]]:
    """Events from JSON lines, and the laws the lines name per user (``jurisdiction``)."""
    from persona_mw.compliance import known_codes

    rows: list[tuple[int, dict[str, Any]]] = []
    laws: dict[str, set[str]] = {}
    zones: dict[str, str] = {}
    minors: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EventLineError(number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise EventLineError(number, "each line must be a JSON object")
        user = row.get("user")
        if not isinstance(user, str) or not user:
            raise EventLineError(number, '"user" must be a non-empty string')
        if row.get("role") not in ("user", "assistant"):
            raise EventLineError(number, '"role" must be "user" or "assistant"')
        tz = row.get("tz")
        if tz is not None:
            if not isinstance(tz, str) or not _known_zone(tz):
                raise EventLineError(
                    number, f'unknown "tz" {tz!r}; use an IANA name such as "Europe/London"'
                )
            zones[user] = tz
        minor = row.get("minor")
        if minor is not None and not isinstance(minor, bool):
            raise EventLineError(number, '"minor" must be true or false')
        if minor:
            minors.add(user)
        text = row.get("text")
        if text is not None and not isinstance(text, str):
            raise EventLineError(number, '"text" must be a string when given')
        codes = row.get("jurisdiction", [])
        codes = [codes] if isinstance(codes, str) else codes
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise EventLineError(number, '"jurisdiction" must be a law code or a list of codes')
        unknown = [c for c in codes if c not in known_codes()]
        if unknown:
            raise EventLineError(
                number, f"unknown jurisdiction(s) {unknown}; use codes from {list(known_codes())}"
            )
        laws.setdefault(user, set()).update(codes)
        rows.append((number, row))

    events = []
    for number, row in rows:
        user, role, text = row["user"], row["role"], row.get("text")
        try:
            ts = datetime.fromisoformat(str(row.get("ts")))
        except ValueError:
            raise EventLineError(number, f'"ts" {row.get("ts")!r} is not ISO-8601') from None
        if ts.tzinfo is None:
            raise EventLineError(
                number, f'"ts" {row["ts"]!r} has no UTC offset; add one, e.g. +00:00'
            )
        cues: frozenset[str] = frozenset()
        score = None
        if text is not None:
            cues, score = analyse(text, role)
        events.append(
            UsageEvent(
                user_id=user,
                ts=ts,
                role=role,
                tz=row.get("tz") or zones.get(user, "UTC"),
                minor=user in minors,
                chars=len(text or ""),
                cues=cues,
                relationship_score=score,
                analysed=text is not None,
            )
        )
    return events, {user: tuple(sorted(codes)) for user, codes in laws.items()}


def analyse_events(
    events: Iterable[UsageEvent],
    now: datetime,
    config: SignalsConfig | None = None,
) -> dict[str, tuple[Signals, list[str]]]:
    """Signals and due actions per user, keyed and ordered by user id."""
    cfg = config or SignalsConfig()
    by_user: dict[str, list[UsageEvent]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event)
    computed = [
        compute_signals(evs, now, cfg, user_id=user, minor=any(e.minor for e in evs))
        for user, evs in sorted(by_user.items())
    ]
    out: dict[str, tuple[Signals, list[str]]] = {}
    for signals in with_percentiles(computed):
        out[signals.user_id] = (signals, run_ladder(signals, config=cfg).kinds)
    return out


@dataclass(frozen=True, slots=True)
class ActionLogEntry:
    """One action the ladder took at one of the user's messages, and the laws behind it."""

    ts: datetime
    action: str
    laws: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts.isoformat(), "action": self.action, "laws": list(self.laws)}


def replay_events(
    events: Iterable[UsageEvent],
    now: datetime,
    config: SignalsConfig | None = None,
    *,
    laws: Mapping[str, tuple[str, ...]] | None = None,
    default_laws: tuple[str, ...] = (),
    misleading_context: bool = False,
) -> dict[str, list[ActionLogEntry]]:
    """Per user, every action the live ladder takes at each of their messages up to ``now``,
    in order: the user's usage folded one message at a time (as the stage's digest does), the
    laws that apply (``default_laws`` plus the user's from ``laws``) turned into the schedule
    as the stage does (:func:`~persona_mw.signals.stage.disclosure_policy`, no deployer
    ``ai-disclosure`` rule), and the due-state carried from one message to the next."""
    from persona_mw.compliance import compliance_for

    from .stage import disclosure_policy, reminder_policy

    cfg = config or SignalsConfig()
    by_user: dict[str, list[UsageEvent]] = {}
    for event in events:
        if event.ts <= now:
            by_user.setdefault(event.user_id, []).append(event)
    out: dict[str, list[ActionLogEntry]] = {}
    for user, evs in sorted(by_user.items()):
        evs.sort(key=lambda e: e.ts)
        minor = any(e.minor for e in evs)
        user_laws = (*default_laws, *(laws or {}).get(user, ()))
        compliance = compliance_for(user_laws, minor=minor, misleading_context=misleading_context)
        disclosure = disclosure_policy(None, cfg, compliance, minor=minor)
        reminder = reminder_policy(compliance, cfg, minor=minor)
        digest = UsageDigest(cfg)
        state: Mapping[str, datetime] = {}
        log: list[ActionLogEntry] = []
        for event in evs:
            digest.add(event, late=True)
            if event.role != "user":
                continue
            signals = digest.signals(event.ts, user_id=user, tz=event.tz, minor=minor)
            result = run_ladder(
                signals, config=cfg, disclosure=disclosure, reminder=reminder, state=state
            )
            state = result.state
            log += [ActionLogEntry(event.ts, a.kind, a.laws) for a in result.actions if a.new]
        out[user] = log
    return out


def to_json(result: Mapping[str, tuple[Signals, list[str]]]) -> dict[str, dict[str, Any]]:
    return {user: {**s.to_dict(), "actions": actions} for user, (s, actions) in result.items()}


def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
