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
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .profile import Profile

if TYPE_CHECKING:  # litellm is imported lazily: it costs ~3 s
    from litellm import ModelResponse, ModelResponseStream

    from .bounds.policy import AIDisclosure
    from .bounds.resolve import EffectivePolicy
    from .signals.ladder import LadderResult

__all__ = [
    "Action",
    "CallContext",
    "ChecksWholeText",
    "Decision",
    "DeclaresRules",
    "ExplainsPolicy",
    "Exposure",
    "FinishStage",
    "HoldsUserData",
    "InputStage",
    "Instruction",
    "LLMClient",
    "Message",
    "Notice",
    "OutputFilter",
    "OutputStage",
    "ProfileSource",
    "ProfileStore",
    "ReportsUsage",
    "Span",
    "Stage",
]

#: One chat message in OpenAI / LiteLLM format: ``{"role": "user", "content": "..."}``.
Message = dict[str, Any]

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


@dataclass(slots=True)
class Exposure:
    """Which parts of the profile shaped this reply: the dependence research counts this."""

    parts: set[str] = field(default_factory=set)
    reduced: bool = False
    instruction_tokens: int = 0


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
    policy: EffectivePolicy | None = None
    #: The deployer's AI-disclosure rule (from ``policy``); None: the signals config's.
    disclosure: AIDisclosure | None = None
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
                return _content_text(message.get("content"))
        return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return ""


@runtime_checkable
class ProfileStore(Protocol):
    """Where profiles live. ``put`` is optimistic: it fails on a stale ``expected_version``."""

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
