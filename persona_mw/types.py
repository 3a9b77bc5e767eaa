"""The contract: read this file and you know the architecture.

A call flows through :class:`persona_mw.Middleware` like this::

    load profile ─▶ input stages ─▶ LLM client ─▶ output stages ─▶ finish stages ─▶ log
    (ProfileStore)  (InputStage)     (LLMClient)   (OutputStage →   (FinishStage,
                    check input,                    OutputFilter)    e.g. usage recording)
                    personalise,
                    dependence actions

Everything one call knows lives in one :class:`CallContext`, created per call and passed along;
stages hold no per-call state of their own (an :class:`OutputFilter` is made fresh per call by its
stage's ``open``). Policy decisions are pure functions; only stores, the LLM and recorders do I/O.
Messages stay in OpenAI / LiteLLM wire format (``list[dict]``): that is the edge we sit on.

Why one module over 400 lines: every protocol of the package is here (issue 18), with the
small value types they carry (a usage event, what the ladder decided), so this one file is the
whole contract. It holds declarations (and :func:`content_text`, how every layer reads a
message's text) and imports nothing of the package but the profile model: what a later stage
hands on in ``CallContext`` (the bounds in force, the deployer's disclosure rule) is declared
here by what the others read of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from .profile import Profile

if TYPE_CHECKING:  # litellm is imported lazily: it costs ~3 s
    from litellm import ModelResponse, ModelResponseStream

__all__ = [
    "Action",
    "ActionKind",
    "ActionStateStore",
    "CallContext",
    "CheckCall",
    "ChecksWholeText",
    "Decision",
    "DeclaresRules",
    "Detector",
    "DisclosureRule",
    "DueAction",
    "ErasedUsage",
    "ExplainsPolicy",
    "Exposure",
    "FinishStage",
    "HoldsUserData",
    "InputStage",
    "Instruction",
    "LLMClient",
    "LadderResult",
    "LawsInForce",
    "Lookup",
    "Message",
    "Notice",
    "OutputFilter",
    "OutputStage",
    "PendingCheck",
    "PolicyInForce",
    "ProfileSource",
    "ProfileStore",
    "RecorderBooks",
    "ReportsUsage",
    "ReviewsOutput",
    "ReviewsReply",
    "SignalValue",
    "Span",
    "Stage",
    "StatutoryCounters",
    "SupportsInvalidation",
    "UsageEvent",
    "UsageSource",
    "UsageStore",
    "content_text",
]

#: One chat message in OpenAI / LiteLLM format: ``{"role": "user", "content": "..."}``.
Message = dict[str, Any]


def content_text(content: Any, separator: str = "\n") -> str:
    """The text of a message's ``content``: the string itself, or its text parts (OpenAI content
    parts) joined with ``separator``; other parts (images, audio) and other values have none."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return separator.join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return ""


Stage = Literal["input", "output"]
Action = Literal["block", "redact", "append", "notify", "log"]
ProfileSource = Literal["cache", "store", "default", "fallback"]


@dataclass(frozen=True, slots=True)
class Span:
    """A flagged stretch of text: ``text[start:end]`` matched ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule that fired on one text: which rule, which tier, which detector, what action."""

    rule_id: str
    tier: int
    stage: Stage
    detector: str
    action: Action
    spans: tuple[Span, ...] = ()
    message: str | None = None
    #: Why this rule is in force for this user ("tier 1: law"; "user opted in; adults only").
    reason: str | None = None
    #: Fired on text from before this turn (an earlier message the app replayed, the profile),
    #: not on the current turn: its notice was shown on its own turn, so it is no new referral
    #: (docs/compliance.md, "Crisis referrals").
    history: bool = False


@dataclass(frozen=True, slots=True)
class Notice:
    """Trusted text we add to the reply (AI disclosure, break reminder, crisis resources)."""

    text: str
    source: str
    position: Literal["before", "after"] = "after"


@dataclass(frozen=True, slots=True)
class Instruction:
    """A bound the model must be told about (e.g. "present several viewpoints"). Bounds stages
    add these; the personaliser places them in the prompt above anything the user wrote."""

    tier: int
    source: str
    text: str


@dataclass(frozen=True, slots=True)
class CheckCall:
    """One call of a model-backed detector (a moderation endpoint, a judge model): what the
    decision log and the metrics show. ``text_hash`` is a keyed digest of the checked text (the
    text itself is never kept)."""

    rule_id: str
    tier: int
    stage: Stage
    kind: str
    model: str
    text_hash: str
    #: "safe", "flagged", "error" or "timeout".
    outcome: Literal["safe", "flagged", "error", "timeout"]
    cached: bool
    ms: float
    labels: tuple[str, ...] = ()


class PendingCheck(Protocol):
    """An input check still running beside the model call (a model-backed classifier the
    bounds input stage started). The enforcement engine awaits ``settle`` before it releases
    any of the reply; settling applies the check's verdict to the context (a late block sets
    ``ctx.reply``, which then replaces the reply). ``cancel`` stops it when the call ends
    first."""

    name: str

    async def settle(self, ctx: CallContext) -> None: ...

    def cancel(self) -> None: ...


@dataclass(slots=True)
class Exposure:
    """Which parts of the profile shaped this reply: the dependence research counts this."""

    parts: set[str] = field(default_factory=set)
    reduced: bool = False
    instruction_tokens: int = 0


class LawsInForce(Protocol):
    """The laws that apply to one user (:class:`persona_mw.compliance.Compliance`), as the
    stages after the bounds read them."""

    @property
    def laws(self) -> tuple[str, ...]: ...


class PolicyInForce(Protocol):
    """The bounds in force for one user (:class:`persona_mw.bounds.EffectivePolicy`), as the
    stages after the bounds read them from ``CallContext.policy``: the policy's version and the
    laws that apply. The bounds stages, which made it, use the whole of it."""

    @property
    def policy_version(self) -> str: ...

    @property
    def compliance(self) -> LawsInForce: ...


class DisclosureRule(Protocol):
    """The deployer's AI-disclosure rule (:class:`persona_mw.bounds.AIDisclosure`): who is told
    "you are talking to an AI", how often, and in which words. The bounds declare it; the
    dependence ladder decides when it is due."""

    @property
    def audience(self) -> Literal["all", "minors"]: ...

    @property
    def interval_hours(self) -> float: ...

    @property
    def at_start_once_per_day(self) -> bool: ...

    @property
    def text(self) -> str: ...


ActionKind = Literal[
    "log",
    "break_reminder",
    "reduced_personalisation",
    "suggest_limits",
    "statutory_reminder",
    "ai_disclosure",
    "daily_cap_reached",
    "quiet_hours",
]
SignalValue = float | int | bool | str | None


@dataclass(frozen=True, slots=True)
class DueAction:
    """One action the dependence ladder wants taken now, with the signal values that triggered
    it."""

    kind: ActionKind
    #: 1 law, 2 deployer policy, 3 the user's own limit.
    tier: int
    #: First time for this due time (log it; show its notice). States are new once a day.
    new: bool
    reason: str
    signals: Mapping[str, SignalValue] = field(default_factory=dict)
    #: The laws that require this action now (jurisdiction codes); empty when none does.
    laws: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LadderResult:
    """What the dependence ladder (:func:`persona_mw.signals.run_ladder`) decided for one call."""

    actions: tuple[DueAction, ...]
    #: The due-state to keep for next time: action kind -> last time it fired.
    state: Mapping[str, datetime]
    #: Signals over their watch threshold: name -> value.
    watch: Mapping[str, SignalValue]

    @property
    def kinds(self) -> list[str]:
        return [a.kind for a in self.actions]

    def get(self, kind: str) -> DueAction | None:
        return next((a for a in self.actions if a.kind == kind), None)


@dataclass(slots=True)
class CallContext:
    """Everything one call knows. Created by the middleware, passed to every stage."""

    request_id: str
    user_id: str
    user_hash: str
    model: str
    #: The application's messages, as given. Never modified.
    messages: list[Message]
    #: The messages sent to the model; input stages (personalisation) rewrite this.
    prompt_messages: list[Message]
    stream: bool
    #: Extra keyword arguments for ``litellm.acompletion`` (temperature, tools, ...).
    llm_kwargs: dict[str, Any]
    profile: Profile
    profile_source: ProfileSource
    started_at: datetime
    #: Where the call came from: "python", "langchain", "server", "litellm-proxy".
    surface: str = "python"
    #: Laws this request says apply (a trusted gateway's header), on top of the deployment's
    #: and the profile's (jurisdiction codes, docs/compliance.md).
    jurisdictions: tuple[str, ...] = ()
    #: The bounds in force for this user; set by the bounds input stage.
    policy: PolicyInForce | None = None
    #: The deployer's AI-disclosure rule (from ``policy``); None: the signals config's.
    disclosure: DisclosureRule | None = None
    #: What the dependence ladder decided for this call; set by the dependence stage.
    signals: LadderResult | None = None
    #: The cue flags of the user's message when the dependence stage analysed it (with the
    #: user's consent): the usage recorder stores these rather than analysing the text again.
    user_cues: frozenset[str] | None = None
    #: How many choices the reply has (the request's ``n``): a stream stopped by a block may
    #: end early only once every one of them was seen. Set by ``Middleware.begin``.
    choices: int = 1
    #: Notices go to a response field (and header) instead of the reply's text: set by
    #: ``Middleware.begin`` for structured replies (``response_format``, tools) or by settings.
    notices_out_of_band: bool = False
    #: Free-form per-call data for third-party stages, keyed by stage name.
    state: dict[str, Any] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    #: Input checks running beside the model call; the engine settles them before the reply.
    pending: list[PendingCheck] = field(default_factory=list)
    #: Set by a host that can tell when the model request went out (``Middleware.acompletion``
    #: / ``astream`` through LiteLLM, the LiteLLM proxy plugin): the pending checks start then,
    #: not before, so their own CPU does not delay the request. None: they start at once.
    #: Settling sets it.
    request_sent: asyncio.Event | None = None
    #: Every model-backed detector call of this call (logged with hashes, counted in metrics).
    checks: list[CheckCall] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    exposure: Exposure = field(default_factory=Exposure)
    #: Set by an input stage to answer without calling the model (e.g. a block).
    reply: str | None = None
    reply_finish_reason: str = "stop"
    #: Filled as the call goes.
    output_text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: Literal["ok", "blocked", "filtered", "error", "cancelled"] = "ok"
    error: str | None = None
    #: The HTTP status the call's error answers with (:func:`persona_mw.errors.http_status`).
    error_status: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def user_text(self) -> str:
        """The text of the last user message (what input rules look at)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""


@dataclass(frozen=True, slots=True)
class Lookup:
    """A profile read and where it came from (what ``CallContext.profile_source`` records)."""

    profile: Profile | None
    #: "cache": a fresh cached copy; "store": read from the store; "fallback": a stale copy
    #: returned because the store could not be reached.
    source: ProfileSource


@runtime_checkable
class ProfileStore(Protocol):
    """Where profiles live. ``put`` is optimistic: it fails on a stale ``expected_version``.

    ``remote``, ``lookup`` and ``ping`` are what the middleware and the server ask of any store
    (instead of testing for a class): whether to put a cache in front, the read with its
    source, and whether the store answers.
    """

    #: Reads cross a network: the middleware puts a ``CachedProfileStore`` in front. False for
    #: in-process stores and for a cache itself.
    remote: bool

    async def lookup(self, user_id: str) -> Lookup:
        """``get`` with where the profile came from (a cache says "cache" or "fallback")."""
        ...

    async def ping(self) -> bool | None:
        """True when the store answers now, False when it does not; None for an in-process store
        (nothing to reach)."""
        ...

    async def get(self, user_id: str) -> Profile | None:
        """The stored profile, or None. Raises StoreError when unreachable, ProfileError when the
        stored data is not a valid profile."""
        ...

    async def put(self, profile: Profile, *, expected_version: int | None = None) -> Profile:
        """Store and return the profile with its new version. With ``expected_version``, raise
        ProfileConflictError unless the stored version (0 when absent) equals it."""
        ...

    async def delete(self, user_id: str, *, keep: Collection[str] = ()) -> bool:
        """Remove everything stored for the user; True when there was something. Fields named
        in ``keep`` whose stored value is not the default survive on a fresh profile, written
        in the same atomic step as the delete (deployer-owned fields a user may not shed)."""
        ...

    async def aclose(self) -> None: ...


class InputStage(Protocol):
    """Runs before the model. May rewrite ``ctx.prompt_messages``, add decisions and notices, or
    answer without the model by setting ``ctx.reply``. Must not keep per-call state on self."""

    name: str

    async def __call__(self, ctx: CallContext) -> None: ...


class OutputFilter(Protocol):
    """Per-call, stateful. ``feed`` takes the next piece of model text and returns the text that
    is safe to release now (it may hold some back); ``finish`` releases what is left. Once
    ``stopped`` is true the reply is over (a block): nothing more is fed. A filter that can
    check a whole reply faster than feeding it also implements :class:`ChecksWholeText`."""

    stopped: bool

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


@runtime_checkable
class ChecksWholeText(Protocol):
    """An :class:`OutputFilter` that can also check a complete text in one pass (a reply that
    was not streamed): ``check_whole(text)`` returns exactly what ``feed(text) + finish()``
    would, and leaves the filter in the same state, without the bookkeeping of a hold-back.
    Optional: the engine feeds and finishes filters that lack it."""

    def check_whole(self, text: str) -> str: ...


class OutputStage(Protocol):
    """Checks what the model says. ``open`` makes a fresh filter for one call."""

    name: str

    def open(self, ctx: CallContext) -> OutputFilter: ...


class ReviewsReply(Protocol):
    """The model-backed output rules of one call (moderation, judge): the engine holds the text
    its filters released until these checked it — a whole reply at once, a stream in windows.
    ``cut`` says how much of the unchecked text to check now (0: wait for more; ``final``: the
    reply ended, so something always); ``check`` asks the models about it (``context``: the
    end of what was already released, for the classifier only), records the decisions and
    notices on the call, and answers whether it is blocked."""

    def cut(self, text: str, *, final: bool) -> int: ...

    async def check(self, text: str, *, context: str) -> bool: ...


@runtime_checkable
class ReviewsOutput(Protocol):
    """An :class:`OutputStage` that also has model-backed rules: its reviewer for one call, or
    None when none is in force for this user."""

    def reviewer(self, ctx: CallContext) -> ReviewsReply | None: ...


class FinishStage(Protocol):
    """Runs after the reply is complete (or failed, or was cancelled): recording, metrics.
    Must be quick: slow work goes to a background queue."""

    name: str

    async def __call__(self, ctx: CallContext) -> None: ...


@runtime_checkable
class HoldsUserData(Protocol):
    """A stage that stores data about users; ``Middleware.erase_user`` calls ``erase``, which
    returns what it removed (a count, or counts by kind) for the erase receipt."""

    name: str

    async def erase(self, user_id: str) -> int | Mapping[str, int]: ...


@runtime_checkable
class ReportsUsage(Protocol):
    """A stage that can show a user their own usage (``Middleware.usage_report``)."""

    name: str

    async def usage_report(self, user_id: str) -> dict[str, Any]: ...


@runtime_checkable
class DeclaresRules(Protocol):
    """A stage that can say which of its rules may take an action: what a host that cannot
    carry an action out (a callback cannot redact) refuses up front."""

    def rules_that(self, action: Action) -> list[str]: ...


@runtime_checkable
class ExplainsPolicy(Protocol):
    """A stage that can say which rules are in force for a profile, and why."""

    name: str

    def explain(self, profile: Profile) -> Any: ...


class LLMClient(Protocol):
    """Calls a model. The default is LiteLLM (`persona_mw.llm.LiteLLMClient`)."""

    async def acompletion(self, **kwargs: Any) -> ModelResponse: ...

    def astream(self, **kwargs: Any) -> AsyncIterator[ModelResponseStream]: ...


# -- what the stages need of their parts ------------------------------------------------------


@runtime_checkable
class SupportsInvalidation(Protocol):
    """A profile store that announces writes (user tags), so caches in other processes can drop
    their copy (Redis pub/sub); :class:`~persona_mw.stores.cache.CachedProfileStore` listens."""

    def invalidations(self) -> AsyncIterator[str]: ...


@runtime_checkable
class Detector(Protocol):
    """Finds spans in text. Stateless: one instance serves every call."""

    #: What kind of detector this is, as it appears in decisions ("phrases", "pii", ...).
    name: str
    #: The longest text one hit can cover, plus the look-ahead it needs (the hold-back need).
    max_span: int

    def detect(self, text: str, start: int = 0) -> list[Span]:
        """Spans with ``span.start >= start``, in order of ``start``."""
        ...

    def live_start(self, text: str, start: int = 0) -> int:
        """The earliest index ``>= start`` where a hit could still begin, or a hit found now
        could still change, if more text were appended (``len(text)`` when none). Text before
        it is settled: ``detect`` on any longer text finds the same hits there. The index is
        also a place where a window may begin again (never inside a candidate)."""
        ...


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One message, user's or assistant's, as the usage signals see it.

    The same type serves live traffic (the usage recorder makes two per request: the user's
    message when it arrives and the assistant's reply when it ends) and offline analysis
    (``persona-mw signals`` reads one per JSON line), so both go through one code path. Message
    text never travels in an event: cue detectors run on the text first (only with the user's
    consent) and leave flags behind."""

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


@dataclass(frozen=True, slots=True)
class ErasedUsage:
    """What erasing a user's usage removed: raw events and local days of rollup."""

    events: int = 0
    days: int = 0


#: What a usage store's ``rollup`` returns: the stores of this package and the dependence stage
#: that folds it share :class:`persona_mw.signals.UsageRollup` (per-day totals of the events).
Rollup_co = TypeVar("Rollup_co", covariant=True)


@runtime_checkable
class UsageStore(Protocol[Rollup_co]):
    """Usage events per user. Implementations raise :class:`~persona_mw.errors.StoreError` when
    the backing service cannot be reached (the recorder retries those)."""

    async def append(self, events: Sequence[UsageEvent]) -> int:
        """Store a batch (any users) in at most one round trip; returns how many were new."""
        ...

    async def rollup(self, user_id: str) -> Rollup_co:
        """The user's rollup (one round trip, O(days + pending))."""
        ...

    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        """The user's events at or after ``since``, oldest first, within the retention window."""
        ...

    async def users(self) -> list[str]:
        """Ids of every user with events inside the retention window."""
        ...

    async def erase(self, user_id: str) -> ErasedUsage:
        """Remove everything the store holds about the user; says what went."""
        ...

    async def aclose(self) -> None: ...


class UsageSource(Protocol[Rollup_co]):
    """What the dependence stage needs of a usage store (every :class:`UsageStore` has it)."""

    async def rollup(self, user_id: str) -> Rollup_co: ...


class RecorderBooks(Protocol):
    """The books a usage recorder keeps (:class:`persona_mw.signals.UsageRecorder`), which the
    metrics read: ``produced == stored + dropped + pending`` whenever no code of it is running."""

    @property
    def produced(self) -> int: ...
    @property
    def stored(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def writes(self) -> int: ...
    @property
    def write_failures(self) -> int: ...
    @property
    def pending(self) -> int: ...


class StatutoryCounters(Protocol):
    """Deployment-wide counters (per law and month) that statutory reports are made from."""

    async def incr(self, counter: str, period: str, amount: int = 1) -> None:
        """Add to a counter (e.g. ``crisis_referrals`` in period ``statutory:2026-07``)."""
        ...

    async def add_counts(self, counts: Mapping[str, Mapping[str, int]], *, token: str) -> None:
        """Add ``counts`` (period -> counter -> amount), at most once per ``token`` (one per
        call): a write the client sends again after losing the reply counts nothing twice."""
        ...

    async def counters(self, period: str) -> dict[str, int]: ...

    async def first_seen(self, user_id: str, periods: Mapping[str, str]) -> frozenset[str]:
        """Atomically, for each ``scope -> period`` (``us-ca-sb243|month -> statutory:2027-03``),
        whether this is the user's first call in that scope this period (the scope last held
        another period, or none); records it. Returns those scopes: a user counts once per law
        and period, whichever worker sees them first."""
        ...


@runtime_checkable
class ActionStateStore(StatutoryCounters, Protocol):
    """When each dependence action last fired for a user, plus the statutory counters."""

    async def get(self, user_id: str) -> dict[str, datetime]:
        """Action kind -> last time it fired (timezone-aware); empty for a new user."""
        ...

    async def set(self, user_id: str, state: Mapping[str, datetime]) -> None: ...

    async def claim(
        self,
        user_id: str,
        expected: Mapping[str, datetime | None],
        taken: Mapping[str, datetime],
    ) -> frozenset[str]:
        """Atomically record each action of ``taken`` at its time where the stored time is
        still ``expected[kind]`` (what the caller read; None: never taken). Returns the kinds
        recorded: of requests that read the same state, one claims each due action."""
        ...

    async def delete(self, user_id: str) -> bool: ...

    async def aclose(self) -> None: ...
