"""Model-backed detectors: a moderation endpoint or a judge model, asked through LiteLLM.

A rule whose detector is ``moderation`` or ``judge`` (:class:`~.policy.ModelSpec`) is checked
here, not by the synchronous scanner. :class:`Classifiers` is the long-lived part (settings and
a TTL cache of verdicts per text digest); per call it is pure I/O plus a pure mapping:

* :meth:`Classifiers.verdict` asks the model once per (detector, stage, text) — or answers
  from the cache — within the rule's timeout, and records the call on the context
  (``ctx.checks``: rule, model, outcome, a keyed digest of the text, never the text) and in
  the ``bounds.classifier_call`` log event;
* :func:`hits_for` turns a verdict into hits: a label mapped to a built-in pack fires that
  pack's rule when it is in force for the user (crisis resources, the minor-safety block),
  the rule's own labels fire the rule, and a failure follows the rule's fail mode (tier 1 fails
  closed: the rule's message).

Input checks run beside the model call (:class:`InputClassifierCheck`, settled by the
enforcement engine before any of the reply is released); output checks run on the reply
(whole) or on windows of a streamed reply (:mod:`persona_mw.enforce.windows`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cachetools import TTLCache

from ..observability import get_logger
from ..types import CallContext, CheckCall, Span, Stage
from .policy import JudgeSpec, ModelSpec, ModerationSpec, PackName
from .scan import Hit, RuleInForce
from .verdict import ClassifierFailed, Verdict

if TYPE_CHECKING:
    from .resolve import EffectivePolicy

__all__ = [
    "MODERATION_PACKS",
    "PACK_RULES",
    "ClassifierFailed",
    "ClassifierSettings",
    "Classifiers",
    "Verdict",
    "hits_for",
]

_log = get_logger("persona_mw.bounds")

#: Moderation categories that feed a built-in pack (when the pack's rule is in force for the
#: user; otherwise only the rule's own ``categories`` count).
MODERATION_PACKS: Mapping[str, PackName] = {
    "self-harm": "crisis",
    "self-harm/intent": "crisis",
    "self-harm/instructions": "crisis",
    "sexual/minors": "minor-safety",
    "sexual": "minor-safety",
}

#: The pack rule a mapped label fires, by pack and stage: on input the crisis protocol's
#: referral, on output its method-content block; the minor-safety block on both.
PACK_RULES: Mapping[tuple[PackName, Stage], str] = {
    ("crisis", "input"): "crisis.ideation",
    ("crisis", "output"): "crisis.methods",
    ("minor-safety", "input"): "minor-safety.sexual",
    ("minor-safety", "output"): "minor-safety.sexual",
}

Outcome = Literal["safe", "flagged", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class ClassifierSettings:
    """Deployment defaults for model-backed detectors (the ``bounds:`` config section)."""

    moderation_model: str = "openai/omni-moderation-latest"
    judge_model: str = "openai/gpt-4o-mini"
    timeout_s: float = 2.0
    #: Extra keyword arguments for LiteLLM (api_base, api_key, ...).
    kwargs: Mapping[str, Any] | None = None
    cache_ttl_s: float = 600.0
    cache_size: int = 10_000


class Classifiers:
    """Asks model-backed detectors, with a shared TTL cache of verdicts. Long-lived (one per
    bounds stage pair); holds no per-call state."""

    def __init__(self, settings: ClassifierSettings | None = None) -> None:
        self.settings = settings or ClassifierSettings()
        self._cache: TTLCache[tuple[str, str, bytes], Verdict] | None = (
            TTLCache(maxsize=self.settings.cache_size, ttl=self.settings.cache_ttl_s)
            if self.settings.cache_ttl_s > 0 and self.settings.cache_size > 0
            else None
        )
        # One middleware may serve several event loops in threads (LangChain's sync bridge).
        self._lock = threading.Lock()
        # Keyed per process: the logged digest of a short text cannot be looked up elsewhere.
        self._key = secrets.token_bytes(16)
        self._abandoned: set[asyncio.Future[Verdict]] = set()

    def model_for(self, spec: ModelSpec) -> str:
        if spec.model:
            return spec.model
        if isinstance(spec, ModerationSpec):
            return self.settings.moderation_model
        return self.settings.judge_model

    def timeout_for(self, spec: ModelSpec) -> float:
        return spec.timeout_s or self.settings.timeout_s

    async def check(
        self, ctx: CallContext, r: RuleInForce, text: str, *, stage: Stage
    ) -> list[Hit]:
        """The hits of rule ``r`` (a model-backed detector) on ``text``; never raises for a
        detector failure (the fail mode decides)."""
        from .resolve import EffectivePolicy

        effective = ctx.policy
        assert isinstance(effective, EffectivePolicy)
        spec = r.rule.detector
        assert isinstance(spec, JudgeSpec | ModerationSpec)
        try:
            verdict = await self.verdict(ctx, r, text, stage=stage)
        except ClassifierFailed:
            return hits_for(r, None, effective, stage=stage, length=len(text))
        return hits_for(r, verdict, effective, stage=stage, length=len(text))

    async def verdict(
        self, ctx: CallContext, r: RuleInForce, text: str, *, stage: Stage
    ) -> Verdict:
        """One verdict, from the cache or the model; recorded on ``ctx.checks`` and logged.
        Raises ClassifierFailed (also recorded) when there is none."""
        spec = r.rule.detector
        assert isinstance(spec, JudgeSpec | ModerationSpec)
        model = self.model_for(spec)
        digest = hmac.new(self._key, text.encode(errors="surrogatepass"), hashlib.sha256).digest()
        key = (spec.model_dump_json(), stage, digest)
        started = time.perf_counter()
        cached = self._cached(key)
        outcome: Outcome = "error"
        verdict: Verdict | None = cached
        error: str | None = None
        try:
            if verdict is None:
                verdict = await self._ask(spec, model, text, stage)
                self._remember(key, verdict)
            outcome = "flagged" if verdict.labels else "safe"
            return verdict
        except ClassifierFailed as exc:
            outcome = "timeout" if exc.timeout else "error"
            error = str(exc)
            raise
        finally:
            call = CheckCall(
                rule_id=r.rule.id,
                tier=r.rule.tier,
                stage=stage,
                kind=spec.kind,
                model=model,
                text_hash=digest.hex()[:16],
                outcome=outcome,
                cached=cached is not None,
                ms=round((time.perf_counter() - started) * 1000.0, 3),
                labels=verdict.labels if verdict is not None else (),
            )
            ctx.checks.append(call)
            log = _log.warning if error is not None else _log.info
            log(
                "bounds.classifier_call",
                request_id=ctx.request_id,
                user=ctx.user_hash,
                rule_id=call.rule_id,
                tier=call.tier,
                stage=stage,
                kind=call.kind,
                model=model,
                text_hash=call.text_hash,
                chars=len(text),
                outcome=outcome,
                labels=list(call.labels),
                cached=call.cached,
                ms=call.ms,
                **({"error": error} if error is not None else {}),
                **(
                    {"fail_mode": "closed" if r.rule.fails_closed else "open"}
                    if error is not None
                    else {}
                ),
            )

    async def _ask(self, spec: ModelSpec, model: str, text: str, stage: Stage) -> Verdict:
        from ..llm import import_litellm

        import_litellm()  # a process's first import takes seconds: not the provider's time
        timeout = self.timeout_for(spec)
        kwargs = dict(self.settings.kwargs or {})
        if isinstance(spec, ModerationSpec):
            from .moderation import moderate

            call = moderate(text, spec, model=model, kwargs=kwargs)
        else:
            call = self._judge(spec, model, text, stage, timeout, kwargs)
        # The call runs as a task of its own that a timeout (or the call being cancelled)
        # abandons rather than cancels: cancelling LiteLLM's acompletion midway leaves one of
        # its coroutines never awaited. An abandoned call ends by LiteLLM's own timeout.
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        finally:
            if not task.done():
                self._abandon(task)
        if not done:
            raise ClassifierFailed(f"no verdict within {timeout} s", timeout=True)
        try:
            return task.result()
        except ClassifierFailed:
            raise
        except Exception as exc:  # the provider's error, whatever its type: the fail mode decides
            raise ClassifierFailed(f"{type(exc).__name__}: {exc}"[:300]) from exc

    async def _judge(
        self,
        spec: JudgeSpec,
        model: str,
        text: str,
        stage: Stage,
        timeout_s: float,
        kwargs: Mapping[str, Any],
    ) -> Verdict:
        from .judge import JudgeFailed, judge

        try:
            labels = await judge(
                text, spec, model=model, stage=stage, timeout_s=timeout_s, kwargs=kwargs
            )
        except JudgeFailed as exc:
            raise ClassifierFailed(str(exc)) from exc
        return Verdict(labels)

    def _abandon(self, task: asyncio.Future[Verdict]) -> None:
        """Keep a call nobody waits for alive until it ends, and swallow its outcome."""
        self._abandoned.add(task)

        def forget(done: asyncio.Future[Verdict]) -> None:
            self._abandoned.discard(done)
            if not done.cancelled():
                done.exception()

        task.add_done_callback(forget)

    def _cached(self, key: tuple[str, str, bytes]) -> Verdict | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(key)

    def _remember(self, key: tuple[str, str, bytes], verdict: Verdict) -> None:
        if self._cache is None:
            return
        with self._lock:
            self._cache[key] = verdict


def hits_for(
    r: RuleInForce,
    verdict: Verdict | None,
    effective: EffectivePolicy,
    *,
    stage: Stage,
    length: int,
) -> list[Hit]:
    """Pure: the hits of one verdict (``None``: the detector failed) on a text of ``length``
    characters. A label mapped to a pack fires that pack's rule for this stage when it is in
    force for the user; a label the rule lists fires the rule; each rule fires once."""
    spec = r.rule.detector
    assert isinstance(spec, JudgeSpec | ModerationSpec)
    whole = (0, max(length, 1))
    if verdict is None:
        closed = r.rule.fails_closed
        span = Span(*whole, "detector-error")
        return [Hit(r, span, spec.kind, "block" if closed else "log", error=True)]
    hits: dict[str, Hit] = {}
    for label in verdict.labels:
        pack = _pack_of(spec, label)
        target = _pack_rule(effective, pack, stage) if pack is not None else None
        if target is None and _own(spec, label):
            target = r
        if target is not None and target.rule.id not in hits:
            hits[target.rule.id] = Hit(
                target, Span(*whole, label[:100]), spec.kind, target.rule.action
            )
    return list(hits.values())


def _pack_of(spec: ModelSpec, label: str) -> PackName | None:
    if isinstance(spec, ModerationSpec):
        return MODERATION_PACKS.get(label) if spec.packs else None
    return spec.packs.get(label)


def _own(spec: ModelSpec, label: str) -> bool:
    if isinstance(spec, ModerationSpec):
        return label in spec.categories
    return True  # a judge is asked only about its own categories


def _pack_rule(effective: EffectivePolicy, pack: PackName, stage: Stage) -> RuleInForce | None:
    rule_id = PACK_RULES.get((pack, stage))
    for r in effective.rules:
        if r.rule.id == rule_id and r.rule.applies_to(stage):
            return r
    return None
