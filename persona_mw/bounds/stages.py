"""The bounds as pipeline stages: :class:`BoundsInputStage` before the model,
:class:`BoundsOutputStage` after it, both built from one immutable :class:`Policy`.

Neither keeps per-call state: the input stage writes everything into the call's context (the
effective policy to ``ctx.policy``, the deployer's disclosure rule to ``ctx.disclosure``), and
the output stage makes a fresh :class:`~persona_mw.bounds.scan.StreamFilter` per text. What
the input hits mean for a call is decided by the pure functions of
:mod:`persona_mw.bounds.input_checks` (re-exported here).

Why ~420 lines in one module: the deployment's ``bounds`` section (:class:`BoundsConfig`), the
two stages it builds and :func:`bounds_stages` that builds them are one wiring; the verdicts
and the scanning already live in their own modules.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..observability import get_logger
from ..profile import Profile
from ..types import Action, CallContext, Notice
from .classifiers import Classifiers, ClassifierSettings
from .input_checks import (
    CrisisInterrupt,
    InputVerdict,
    apply_late_verdict,
    check_input,
    classify,
    crisis_interrupt,
    input_verdict,
    redact_last_user,
)
from .inputs import (
    MessageText,
    ProfileTextFinding,
    VerdictCache,
    message_texts,
    plan_input,
    profile_for_prompt,
    profile_text_findings,
    profile_texts,
    scan_message,
)
from .loading import load_policy, policy_from_dict
from .policy import Policy
from .resolve import EffectivePolicy, resolve
from .review import ReplyReview
from .scan import (
    DEFAULT_MARGIN,
    Hit,
    RuleInForce,
    Scanner,
    StreamFilter,
    hold_back_for,
)

__all__ = [
    "BASELINE_POLICY",
    "BoundsConfig",
    "BoundsInputStage",
    "BoundsOutputStage",
    "CrisisInterrupt",
    "InputClassifierCheck",
    "InputVerdict",
    "bounds_stages",
    "check_input",
    "crisis_interrupt",
    "input_verdict",
    "redact_last_user",
]

_log = get_logger("persona_mw.bounds")
#: Profiles whose text checks a stage keeps (all dropped at once past it: a few kB each).
_PROFILE_CHECKS_MAX = 4096

#: The policy used when a deployment names no policy file: the tier-1 packs only.
BASELINE_POLICY: dict[str, Any] = {
    "version": "baseline-1",
    "packs": ["crisis", "ai-disclosure", "minor-safety"],
}


class BoundsConfig(BaseModel):
    """The ``bounds:`` section of a deployment config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Policy files, loaded in order at start-up (relative paths: against the config file).
    #: None given: :data:`BASELINE_POLICY` (crisis, ai-disclosure, minor-safety).
    policies: tuple[str, ...] = ()
    #: Characters a stream holds back beyond the longest text a rule needs.
    hold_back_margin: int = Field(default=DEFAULT_MARGIN, ge=0, le=64)
    #: LiteLLM models for judge / moderation rules that name none.
    judge_model: str = "openai/gpt-4o-mini"
    moderation_model: str = "openai/omni-moderation-latest"
    #: How long a model-backed detector's verdict may take, for rules that set no ``timeout_s``.
    classifier_timeout_s: float = Field(default=2.0, gt=0, le=60)
    #: Extra keyword arguments for the detectors' LiteLLM calls (api_base, api_key, ...).
    classifier_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: How long a verdict per text is reused (0: never), and how many are kept.
    classifier_cache_ttl_s: float = Field(default=600.0, ge=0, le=86_400)
    classifier_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    #: Laws that apply to every user of this deployment (codes, docs/compliance.md); a profile's
    #: ``jurisdictions`` and a trusted gateway header add to them, never take away.
    jurisdictions: tuple[str, ...] = ()
    #: The deployment is one where a person could take the AI for a human (CA SB 243 §22602(a),
    #: OR SB 1546 §2): those laws' disclosure duties then apply to adults too.
    misleading_context: bool = False

    @field_validator("jurisdictions")
    @classmethod
    def _known_laws(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from ..compliance import known_codes

        unknown = [code for code in value if code not in known_codes()]
        if unknown:
            raise ValueError(
                f"unknown jurisdiction(s) {unknown}; use codes from {list(known_codes())}"
            )
        return value

    def classifier_settings(self) -> ClassifierSettings:
        return ClassifierSettings(
            moderation_model=self.moderation_model,
            judge_model=self.judge_model,
            timeout_s=self.classifier_timeout_s,
            kwargs=dict(self.classifier_kwargs),
            cache_ttl_s=self.classifier_cache_ttl_s,
            cache_size=self.classifier_cache_size,
        )

    def load(self, base_dir: str | os.PathLike[str] | None = None) -> Policy:
        """The policy these settings name (PolicyError when a file is bad)."""
        if not self.policies:
            return policy_from_dict(BASELINE_POLICY, source="<baseline>")
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return load_policy(*(base / p for p in self.policies))


class InputClassifierCheck:
    """The model-backed input rules on the messages the synchronous scan could not settle from
    the cache, running beside the model call (a :class:`~persona_mw.types.PendingCheck`).

    Settling applies the late verdict: a block anywhere in the conversation — the prompt is
    already with the model, so an earlier message can no longer be withheld — replaces the
    reply with the rule's message (``ctx.reply``); the crisis interrupt likewise; append and
    notify add their notices; every hit is a decision. Instructions cannot reach the model any
    more (policy load refuses them on these rules)."""

    name = "bounds.classifiers"

    def __init__(
        self,
        stage: BoundsInputStage,
        ctx: CallContext,
        effective: EffectivePolicy,
        todo: Sequence[tuple[MessageText, tuple[int, bytes], list[Hit]]],
    ) -> None:
        self._stage = stage
        self._effective = effective
        self._todo = list(todo)
        self._task = asyncio.ensure_future(self._run(ctx))

    async def _run(self, ctx: CallContext) -> list[tuple[MessageText, list[Hit]]]:
        if ctx.request_sent is not None:
            # A classifier call costs milliseconds of CPU (LiteLLM, its HTTP client) on the one
            # event loop: spent before the model request is out, it would delay it.
            await ctx.request_sent.wait()
        found = await asyncio.gather(
            *(
                classify(ctx, self._stage.classifiers, self._effective, message.text)
                for message, _, _ in self._todo
            )
        )
        late = []
        for (message, key, early), hits in zip(self._todo, found, strict=True):
            self._stage.verdicts.remember(key, self._effective, [*early, *hits])
            if hits:
                late.append((message, hits))
        return late

    async def settle(self, ctx: CallContext) -> None:
        late = await self._task
        if late:
            apply_late_verdict(ctx, self._effective, late)

    def cancel(self) -> None:
        self._task.cancel()


class BoundsInputStage:
    """Checks every input message (all roles, all turns, every text part) against the effective
    bounds (:mod:`persona_mw.bounds.inputs`): blocks (answers with the rule's message and
    ``finish_reason="content_filter"``) or withholds an earlier message, redacts the prompt,
    adds notices (crisis resources) and the bounds' instructions for the personaliser."""

    name = "bounds"

    def __init__(
        self,
        *,
        policy: Policy,
        classifiers: Classifiers | None = None,
        scorer: Callable[[str], float] | None = None,
        jurisdictions: Sequence[str] = (),
        misleading_context: bool = False,
    ) -> None:
        self.policy = policy
        self.jurisdictions = tuple(jurisdictions)
        self.misleading_context = misleading_context
        #: Asks the model-backed detectors (moderation, judge), with their verdict cache.
        self.classifiers = classifiers or Classifiers()
        self.scorer = scorer
        #: Each text's hits, so replayed history is not checked (nor judged) again.
        self.verdicts = VerdictCache()
        #: Each profile's text checks under each effective policy, by identity: a stored
        #: profile is one frozen object until it changes, so its texts are checked once. The
        #: policy is held weakly: resolve's own cache decides how long a user's policy lives.
        self._profile_checks: dict[
            tuple[int, int],
            tuple[weakref.ref[EffectivePolicy], Profile, list[tuple[str, tuple[Hit, ...]]]],
        ] = {}

    def rules_that(self, action: Action) -> list[str]:
        return self.policy.rules_that(action)

    def explain(self, profile: Profile) -> dict[str, Any]:
        """Every rule in force for ``profile`` (and every rule not in force), with its tier and
        why: what ``GET /v1/policy`` and ``persona-mw bounds policy`` show."""
        return self.effective(profile).explain()

    def effective(self, profile: Profile, request_laws: Sequence[str] = ()) -> EffectivePolicy:
        """The bounds in force for ``profile`` under the deployment's laws, the profile's and
        the request's (a trusted gateway header)."""
        return resolve(
            self.policy,
            profile,
            scorer=self.scorer,
            jurisdictions=(*self.jurisdictions, *request_laws),
            misleading_context=self.misleading_context,
        )

    async def __call__(self, ctx: CallContext) -> None:
        effective = self.effective(ctx.profile, ctx.jurisdictions)
        ctx.policy = effective
        ctx.disclosure = effective.ai_disclosure
        ctx.instructions.extend(effective.instructions)
        if effective.input.empty and not effective.input_classifiers:
            return
        self._redact_profile(ctx, effective)
        checked: list[tuple[MessageText, Sequence[Hit]]] = []
        todo: list[tuple[MessageText, tuple[int, bytes], list[Hit]]] = []
        for message in message_texts(ctx.prompt_messages):
            key, hits = self.verdicts.lookup(effective, message.parts)
            if hits is None:
                found = scan_message(effective.input.scan, message)
                if effective.input_classifiers:
                    # cached once the classifiers answered too (InputClassifierCheck)
                    todo.append((message, key, found))
                    hits = tuple(found)
                else:
                    hits = self.verdicts.remember(key, effective, found)
            if hits:
                checked.append((message, hits))
        if not checked:
            self._start_classifiers(ctx, effective, todo)
            return
        plan = plan_input(ctx.prompt_messages, checked)
        ctx.decisions.extend(plan.decisions)
        if plan.reply is not None:
            ctx.reply = plan.reply
            ctx.reply_finish_reason = "content_filter"
            return
        if effective.compliance.crisis == "interrupt":
            interrupt = crisis_interrupt(ctx.prompt_messages, checked)
            if interrupt is not None and interrupt.position == "reply":
                ctx.reply = interrupt.text
                ctx.reply_finish_reason = "content_filter"
                return
            if interrupt is not None and all(n.source != interrupt.source for n in plan.notices):
                ctx.notices.append(Notice(interrupt.text, interrupt.source, "after"))
        ctx.notices.extend(plan.notices)
        ctx.instructions.extend(plan.instructions)
        ctx.prompt_messages = plan.messages
        self._start_classifiers(ctx, effective, todo)

    def _start_classifiers(
        self,
        ctx: CallContext,
        effective: EffectivePolicy,
        todo: Sequence[tuple[MessageText, tuple[int, bytes], list[Hit]]],
    ) -> None:
        """The model-backed rules on the uncached messages, beside the model call: the
        enforcement engine settles them before it releases any of the reply."""
        if todo:
            ctx.pending.append(InputClassifierCheck(self, ctx, effective, todo))

    def check_profile_text(
        self, profile: Profile, *, since: Profile | None = None
    ) -> list[ProfileTextFinding]:
        """What the input rules in force for ``profile`` would block or redact in its text
        fields (those that differ from ``since``): a profile write refuses these."""
        effective = self.effective(profile)
        return profile_text_findings(effective, profile, since=since)

    def _redact_profile(self, ctx: CallContext, effective: EffectivePolicy) -> None:
        """The prompt carries the profile's free text: give later stages a copy redacted by the
        synchronous input rules (a field a blocking rule fires on is left out)."""
        profile = ctx.profile
        memo = self._profile_checks.get((id(effective), id(profile)))
        if memo is not None and memo[0]() is effective and memo[1] is profile:
            checked = memo[2]
        else:
            checked = []
            for field, text in profile_texts(profile):
                key, hits = self.verdicts.lookup(effective, text)
                if hits is None:
                    hits = self.verdicts.remember(key, effective, effective.input.scan(text))
                if hits:
                    checked.append((field, hits))
            if not any(h.error for _, hits in checked for h in hits):  # failures: try again
                if len(self._profile_checks) >= _PROFILE_CHECKS_MAX:
                    self._profile_checks.clear()
                self._profile_checks[id(effective), id(profile)] = (
                    weakref.ref(effective),
                    profile,
                    checked,
                )
        if checked:
            ctx.profile, decisions = profile_for_prompt(ctx.profile, checked)
            ctx.decisions.extend(decisions)

    def __repr__(self) -> str:
        return f"BoundsInputStage(policy={self.policy.version!r})"


class BoundsOutputStage:
    """Enforces the output rules on the model's reply, streamed or not, through a hold-back of
    the longest text a rule needs plus ``hold_back_margin`` characters."""

    name = "bounds"

    def __init__(
        self,
        *,
        policy: Policy,
        hold_back_margin: int = DEFAULT_MARGIN,
        scorer: Callable[[str], float] | None = None,
        jurisdictions: Sequence[str] = (),
        misleading_context: bool = False,
        classifiers: Classifiers | None = None,
    ) -> None:
        if not 0 <= hold_back_margin <= 64:
            raise ValueError("hold_back_margin must be between 0 and 64 characters")
        self.policy = policy
        #: Asks the model-backed output rules (moderation, judge); shared with the input stage.
        self.classifiers = classifiers or Classifiers()
        self.jurisdictions = tuple(jurisdictions)
        self.misleading_context = misleading_context
        self.hold_back_margin = hold_back_margin
        self.scorer = scorer

    def rules_that(self, action: Action) -> list[str]:
        return self.policy.rules_that(action)

    def open(self, ctx: CallContext) -> StreamFilter:
        scanner, _ = self._output(ctx)
        return StreamFilter(scanner, ctx, hold_back=hold_back_for(scanner, self.hold_back_margin))

    def reviewer(self, ctx: CallContext) -> ReplyReview | None:
        """The model-backed output rules in force for this user, for one call (a
        :class:`~persona_mw.types.ReviewsReply`); None when there are none."""
        _, rules = self._output(ctx)
        return ReplyReview(self.classifiers, ctx, rules, self._effective(ctx)) if rules else None

    def _output(self, ctx: CallContext) -> tuple[Scanner, tuple[RuleInForce, ...]]:
        """The output rules for this call: those in force for the user, plus those whose
        ``after_input`` rule fired on the call's input (any turn)."""
        fired = {d.rule_id for d in ctx.decisions if d.stage == "input"}
        return self._effective(ctx).output_after(fired)

    def _effective(self, ctx: CallContext) -> EffectivePolicy:
        effective = ctx.policy
        if not isinstance(effective, EffectivePolicy):  # no bounds input stage ran (wired by hand)
            effective = ctx.policy = resolve(
                self.policy,
                ctx.profile,
                scorer=self.scorer,
                jurisdictions=(*self.jurisdictions, *ctx.jurisdictions),
                misleading_context=self.misleading_context,
            )
        return effective

    def __repr__(self) -> str:
        return f"BoundsOutputStage(policy={self.policy.version!r})"


def bounds_stages(
    config: BoundsConfig | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    scorer: Callable[[str], float] | None = None,
) -> tuple[BoundsInputStage, BoundsOutputStage]:
    """Both stages for a deployment, sharing one policy loaded now (fails at start-up)."""
    config = config or BoundsConfig()
    policy = config.load(base_dir)
    classifiers = Classifiers(config.classifier_settings())
    return (
        BoundsInputStage(
            policy=policy,
            classifiers=classifiers,
            scorer=scorer,
            jurisdictions=config.jurisdictions,
            misleading_context=config.misleading_context,
        ),
        BoundsOutputStage(
            policy=policy,
            hold_back_margin=config.hold_back_margin,
            scorer=scorer,
            classifiers=classifiers,
            jurisdictions=config.jurisdictions,
            misleading_context=config.misleading_context,
        ),
    )
