"""The dependence stage: before the model, compute the user's signals and take the ladder's actions.

Per call: load the user's usage rollup (one round trip of O(days) small values, or none within
the short cache; concurrent requests of one user share one load: single-flight per process),
add the message being sent now to the user's :class:`~persona_mw.signals.compute.UsageDigest`
rebuilt from it (kept with the cache, so a request costs the same for a user with ten events or
a hundred thousand), read the signals from it,
:func:`~persona_mw.signals.ladder.run_ladder` against the due-state kept in an
:class:`~persona_mw.signals.action_state.ActionStateStore`, then act: notices on the reply, reduced
personalisation, or, for a reached daily cap only, an answer without the model. Actions are logged
(``dependence.signal``, ``dependence.action``) with the user's hash, never the raw id.

If the usage store cannot be reached the call goes on without signals (logged and counted):
dependence actions are care, not a gate; the tier-1 crisis protocol lives in the bounds stages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from persona_mw.compliance import Compliance
from persona_mw.errors import StoreError
from persona_mw.types import (
    CallContext,
    Decision,
    DisclosureRule,
    LadderResult,
    Notice,
    UsageEvent,
    UsageSource,
)

from ..observability import get_logger
from .action_state import ActionStateStore, MemoryActionStateStore, claim_due
from .compute import Signals, UsageDigest
from .config import STATUTORY_INTERVAL_MINUTES, SignalsConfig
from .cues import Analyse, analyse_text
from .ladder import DisclosurePolicy, ReminderPolicy, run_ladder
from .metrics import SignalsMetrics
from .usage_store import UsageRollup

__all__ = ["DependenceStage", "UsageSource", "disclosure_policy", "reminder_policy"]

_log = get_logger("persona_mw.signals")
#: Users whose digest this process keeps (least recently used go first). A digest is O(days),
#: a few kB, so this bounds the stage's memory whatever the users' histories.
_CACHE_MAX_USERS = 10_000


@dataclass(slots=True)
class _UserUsage:
    """One user's usage as this process knows it: the digest of their stored rollup plus the
    messages it has served since. Per day, never per event: a heavy user costs what a light one
    does."""

    digest: UsageDigest
    #: Request ids of user messages already counted (a retried stage adds none twice).
    requests: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, rollup: UsageRollup, config: SignalsConfig) -> _UserUsage:
        return cls(
            rollup.digest(config),
            {e.request_id for e in rollup.pending if e.role == "user" and e.request_id},
        )

    def add(self, event: UsageEvent) -> None:
        if event.request_id:
            self.requests.add(event.request_id)
        # An earlier message after a later one (two requests of one user in flight) still
        # counts; its active time is settled by the store's reorder window at the next load.
        self.digest.add(event, late=True)

    def signals(self, now: datetime, **kwargs: Any) -> Signals:
        # the ladder reads the figures only: no per-day table (see UsageDigest.signals)
        return _signals_at(self.digest, now, history=False, **kwargs)


def _signals_at(digest: UsageDigest, now: datetime, **kwargs: Any) -> Signals:
    """Signals at ``now``, or at the latest event if that is later: a later request of this
    user may have been counted first (the two are milliseconds apart)."""
    last = digest.last_ts
    return digest.signals(now if last is None or last <= now else last, **kwargs)


class DependenceStage:
    """Input stage ``"dependence"``. Holds only long-lived parts (stores, config, metrics, a
    short per-user event cache and the deployment's usage distribution); nothing per call."""

    name = "dependence"

    def __init__(
        self,
        usage_store: UsageSource[UsageRollup],
        *,
        config: SignalsConfig | None = None,
        state_store: ActionStateStore | None = None,
        metrics: SignalsMetrics | None = None,
        analyse: Analyse = analyse_text,
    ) -> None:
        self.usage_store = usage_store
        self.config = config or SignalsConfig()
        self.state_store: ActionStateStore = (
            state_store if state_store is not None else MemoryActionStateStore()
        )
        self.metrics = metrics or SignalsMetrics.default()
        self.analyse = analyse
        #: Mean daily minutes of every user, for percentiles (see :meth:`refresh_population`).
        self.population: tuple[float, ...] | None = None
        ttl = self.config.events_cache_ttl_s
        self._cache: TTLCache[str, _UserUsage] | None = (
            TTLCache(_CACHE_MAX_USERS, ttl, timer=time.monotonic) if ttl > 0 else None
        )
        #: Loads in flight, per user: concurrent requests of one user await the same one.
        self._loads: dict[str, asyncio.Task[_UserUsage]] = {}

    async def __call__(self, ctx: CallContext) -> None:
        try:
            # The usage is this process's cache (no await) or a load in flight; the due-state is
            # read meanwhile. Awaited in turn, not gathered: gather wraps each in a task, two
            # tasks and a turn of the event loop per call for what is most often a cache hit.
            known = self._cached(ctx.user_id) or self._start_load(ctx.user_id)
            state = await self.state_store.get(ctx.user_id)
            # shield: one caller cancelled (a client gone) must not cancel the others' load
            usage = known if isinstance(known, _UserUsage) else await asyncio.shield(known)
        except StoreError as exc:
            self.metrics.errors.inc()
            _log.warning(
                "dependence.unavailable",
                user_hash=ctx.user_hash,
                request_id=ctx.request_id,
                error=str(exc),
            )
            return
        if ctx.request_id not in usage.requests:
            # The message being sent now; the recorder stores it after the call, and until the
            # cache refreshes this process remembers it, so counts do not lag behind.
            usage.add(self._current_event(ctx))
        profile = ctx.profile
        signals = usage.signals(
            ctx.started_at,
            user_id=ctx.user_id,
            tz=profile.timezone,
            minor=profile.known_minor,
            population=self.population,
        )
        # the laws' schedule: the bounds stage's effective policy carries it (a Compliance)
        laws = ctx.policy.compliance if ctx.policy is not None else None
        compliance = laws if isinstance(laws, Compliance) else None
        minor = profile.known_minor
        result = run_ladder(
            signals,
            config=self.config,
            limits=profile.limits,
            disclosure=disclosure_policy(ctx.disclosure, self.config, compliance, minor=minor),
            reminder=reminder_policy(compliance, self.config, minor=minor),
            state=state,
        )
        try:
            # atomic: of this user's requests in flight at once, one takes each due action
            result = await claim_due(self.state_store, ctx.user_id, state, result)
        except StoreError as exc:
            _log.warning(
                "dependence.state_not_saved",
                user_hash=ctx.user_hash,
                request_id=ctx.request_id,
                error=str(exc),
            )
        self.metrics.observe(signals, result)
        ctx.signals = result
        self._log(ctx, signals, result)
        self._act(ctx, result)

    def cached_digest(self, user_id: str) -> UsageDigest | None:
        """The digest of ``user_id``'s usage this process holds (their stored rollup plus the
        messages it served since), or None when it holds none (never loaded, expired, erased,
        or the cache is off). For inspection: the stage owns it; do not add to it."""
        usage = self._cache.get(user_id) if self._cache is not None else None
        return usage.digest if usage is not None else None

    @property
    def loads_in_flight(self) -> int:
        """Users whose usage is being loaded now (concurrent requests of one user share one)."""
        return len(self._loads)

    async def usage_report(self, user_id: str) -> dict[str, Any]:
        """What the user may see of their own usage (``GET /v1/users/{id}/usage``): today's and
        the window's signals, each local day of the window, and when each action last fired.
        Read from the usage store's rollup, not this process's cache; no message text exists."""
        now = datetime.now(UTC)
        rollup, state = await asyncio.gather(
            self.usage_store.rollup(user_id), self.state_store.get(user_id)
        )
        signals = rollup.signals(now, self.config, user_id=user_id)
        return {
            "events": rollup.events,
            "signals": signals.to_dict(history=True),
            "actions_last_taken": {kind: at.isoformat() for kind, at in sorted(state.items())},
        }

    async def aclose(self) -> None:
        """Close the due-state store (``Middleware.aclose``)."""
        await self.state_store.aclose()

    async def erase(self, user_id: str) -> int:
        """Forget the user (``Middleware.erase_user``): this process's copy of their usage and
        the stored due-state of their actions. Returns 1 if stored state was deleted."""
        if self._cache is not None:
            self._cache.pop(user_id, None)
        return int(await self.state_store.delete(user_id))

    async def refresh_population(self, users: Sequence[str], now: datetime) -> int:
        """Recompute the deployment's distribution of mean daily minutes from ``users`` (e.g. the
        usage store's ``users()``): a periodic job, not per request. Returns how many users."""
        values = []
        for user in users:
            rollup = await self.usage_store.rollup(user)
            if rollup.events:
                values.append(rollup.signals(now, self.config).mean_daily_minutes_28)
        self.population = tuple(values) or None
        return len(values)

    # -- helpers ------------------------------------------------------------------------------

    def _cached(self, user_id: str) -> _UserUsage | None:
        return self._cache.get(user_id) if self._cache is not None else None

    def _start_load(self, user_id: str) -> asyncio.Task[_UserUsage]:
        """The load of the user's usage, started once however many of their requests ask at
        once (the cache expiring under a heavy user's fifty requests in flight costs one load)."""
        loop = asyncio.get_running_loop()
        load = self._loads.get(user_id)
        if load is None or load.get_loop() is not loop:  # a task is awaitable on its own loop
            load = loop.create_task(self._load(user_id))
            self._loads[user_id] = load
            load.add_done_callback(lambda done: self._forget_load(user_id, done))
        return load

    def _forget_load(self, user_id: str, done: asyncio.Task[_UserUsage]) -> None:
        if self._loads.get(user_id) is done:
            del self._loads[user_id]
        if not done.cancelled():
            done.exception()  # retrieved here: a failure nobody awaited is not "never retrieved"

    async def _load(self, user_id: str) -> _UserUsage:
        usage = _UserUsage.load(await self.usage_store.rollup(user_id), self.config)
        if self._cache is not None:
            self._cache[user_id] = usage
        return usage

    def _current_event(self, ctx: CallContext) -> UsageEvent:
        """The user's message of this call, as the recorder will store it."""
        text = ctx.user_text()
        consent = ctx.profile.consent.text_analysis
        cues = self.analyse(text, "user")[0] if consent and text else frozenset()
        if consent:
            ctx.user_cues = cues
        return UsageEvent(
            user_id=ctx.user_id,
            ts=ctx.started_at,
            role="user",
            tz=ctx.profile.timezone,
            minor=ctx.profile.known_minor,
            chars=len(text),
            cues=cues,
            request_id=ctx.request_id,
            analysed=consent,
        )

    def _log(self, ctx: CallContext, signals: Signals, result: LadderResult) -> None:
        fresh = [a for a in result.actions if a.new]
        if not fresh:
            return
        _log.info(
            "dependence.signal",
            user_hash=ctx.user_hash,
            request_id=ctx.request_id,
            watch=sorted(result.watch),
            signals=signals.to_dict(),
        )
        for action in fresh:
            _log.info(
                "dependence.action",
                user_hash=ctx.user_hash,
                request_id=ctx.request_id,
                action=action.kind,
                tier=action.tier,
                reason=action.reason,
                signals=dict(action.signals),
            )

    def _act(self, ctx: CallContext, result: LadderResult) -> None:
        cfg = self.config
        new = {a.kind for a in result.actions if a.new}
        if "reduced_personalisation" in result.kinds:
            ctx.exposure.reduced = True
        cap = result.get("daily_cap_reached")
        if cap is not None:
            ctx.decisions.append(
                Decision(
                    rule_id="signals.daily_cap",
                    tier=cap.tier,
                    stage="input",
                    detector="dependence",
                    action="block",
                    message=cfg.daily_cap_text,
                    reason=cap.reason,
                )
            )
            ctx.reply = cfg.daily_cap_text
            ctx.reply_finish_reason = "content_filter"
            return
        if "statutory_reminder" in new:
            # Says both things the law asks for: take a break, and this is not a human.
            ctx.notices.append(
                Notice(cfg.minor_reminder_text, "signals.statutory_reminder", "before")
            )
            new -= {"break_reminder", "ai_disclosure"}
        if "ai_disclosure" in new:
            text = ctx.disclosure.text if ctx.disclosure is not None else cfg.ai_disclosure_text
            ctx.notices.append(Notice(text, "signals.ai_disclosure", "before"))
        if "break_reminder" in new:
            ctx.notices.append(Notice(cfg.break_reminder_text, "signals.break_reminder", "after"))
        if "quiet_hours" in new:
            ctx.notices.append(Notice(cfg.quiet_hours_text, "signals.quiet_hours", "after"))
        if "suggest_limits" in new:
            ctx.notices.append(Notice(cfg.suggest_limits_text, "signals.suggest_limits", "after"))


_AT_START_RANK = {"none": 0, "first": 1, "daily": 2}


def disclosure_policy(
    rule: DisclosureRule | None,
    config: SignalsConfig,
    compliance: Compliance | None = None,
    *,
    minor: bool = False,
) -> DisclosurePolicy:
    """When this user is told "you are talking to an AI". The deployer's rule (the bounds'
    ``ai-disclosure`` pack, on ``ctx.disclosure``) when there is one, else the config's; its
    interval never exceeds the statutory 3 hours. The laws that apply to the user
    (``compliance``) add to it: the earliest start and the shortest interval win."""
    if rule is None:
        base = DisclosurePolicy(
            audience=config.ai_disclosure_audience,
            interval_minutes=min(config.ai_disclosure_interval_minutes, STATUTORY_INTERVAL_MINUTES),
            text=config.ai_disclosure_text,
        )
    else:
        base = DisclosurePolicy(
            audience=rule.audience,
            interval_minutes=min(rule.interval_hours * 60, STATUTORY_INTERVAL_MINUTES),
            text=rule.text,
            at_start="daily" if rule.at_start_once_per_day else "none",
        )
    if compliance is None or (
        compliance.disclosure_at_start is None and compliance.disclosure_every is None
    ):
        return base
    applies = base.audience == "all" or minor
    at_start = compliance.disclosure_at_start or "none"
    if applies and _AT_START_RANK[base.at_start] > _AT_START_RANK[at_start]:
        at_start = base.at_start
    intervals = [compliance.disclosure_every.minutes] if compliance.disclosure_every else []
    if applies and base.interval_minutes is not None:
        intervals.append(base.interval_minutes)
    start_laws = tuple(dict.fromkeys(ref.code for ref in compliance.disclosure_at_start_by))
    return DisclosurePolicy(
        audience="all",
        interval_minutes=min(intervals) if intervals else None,
        text=base.text,
        at_start=at_start,
        start_laws=start_laws,
        interval_laws=compliance.disclosure_every.laws if compliance.disclosure_every else (),
    )


def reminder_policy(
    compliance: Compliance | None, config: SignalsConfig, *, minor: bool
) -> ReminderPolicy | None:
    """The laws' break + not-human reminder for this user (the shortest of theirs and, for a
    known minor, the config's); None: no law asks, and the ladder's default for minors holds."""
    if compliance is None or compliance.reminder_every is None:
        return None
    minutes = compliance.reminder_every.minutes
    if minor:
        minutes = min(minutes, config.minor_reminder_interval_minutes)
    return ReminderPolicy(minutes, compliance.reminder_every.laws)
