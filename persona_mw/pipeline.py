"""The middleware: load profile → input stages → model → output stages → finish stages → log.

:class:`Middleware` holds only configuration and long-lived parts (store, stages, LLM client);
everything about one call lives in its :class:`~persona_mw.types.CallContext`. Streamed and
non-streamed replies go through the same output filters, so a bound gives the same verdict
however the text arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .enforce import (
    FilterChain,
    ReplyEnforcer,
    block_message,
    blocked_ending,
    cancel_checks,
    enforce_response,
    mark_failed,
    notices_out_of_band,
    notices_text,
    synthetic_chunks,
    synthetic_response,
    with_notices,
)
from .enforce import enforce_stream as _enforce_stream
from .errors import ProfileError, StoreError, http_status
from .llm import LiteLLMClient, signal_sent
from .observability import REQUEST_EVENT, UserHasher, get_logger, request_event
from .profile import Profile, parse_profile
from .stores.cache import CachedProfileStore
from .stores.memory import MemoryProfileStore
from .tracing import record_call
from .types import (
    Action,
    CallContext,
    DeclaresRules,
    ExplainsPolicy,
    FinishStage,
    HoldsUserData,
    InputStage,
    LLMClient,
    Message,
    OutputStage,
    ProfileSource,
    ProfileStore,
    ReportsUsage,
    ReviewsOutput,
)

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream

    from .config import Settings

__all__ = [
    "FilterChain",
    "Middleware",
    "block_message",
    "blocked_ending",
    "notices_text",
    "with_notices",
]

_log = get_logger("persona_mw")
_warned_ephemeral = False  # warn once per process, not per middleware


class Middleware:
    """Personalisation within bounds, around any LiteLLM model.

    >>> mw = Middleware()                                   # embedded defaults
    >>> reply = await mw.acompletion(user="ada", model="gpt-4o-mini", messages=[...])

    Keyword-only; every part is optional: ``store`` (default in-memory), ``llm`` (default
    LiteLLM), and the stage lists that the bounds, personalisation and signals packages fill
    (see :func:`persona_mw.build_middleware` for the wired-up default).
    """

    def __init__(
        self,
        *,
        store: ProfileStore | None = None,
        llm: LLMClient | None = None,
        input_stages: Sequence[InputStage] = (),
        output_stages: Sequence[OutputStage] = (),
        finish_stages: Sequence[FinishStage] = (),
        settings: Settings | None = None,
    ) -> None:
        from .config import Settings

        self.settings = settings or Settings()
        inner = store if store is not None else MemoryProfileStore()
        self.store: ProfileStore = (
            CachedProfileStore(inner, ttl=self.settings.profile_cache_ttl_s)
            if self.settings.profile_cache_ttl_s > 0 and inner.remote
            else inner
        )
        self.llm: LLMClient = llm if llm is not None else LiteLLMClient()
        self.input_stages = tuple(input_stages)
        self.output_stages = tuple(output_stages)
        self.finish_stages = tuple(finish_stages)
        #: Output stages with model-backed reply checks (found once: a protocol isinstance
        #: costs microseconds, and every call asks).
        self._reviewers = tuple(s for s in self.output_stages if isinstance(s, ReviewsOutput))
        self.hash_user = UserHasher(
            self.settings.hash_secret.get_secret_value() if self.settings.hash_secret else None,
            raw=self.settings.log_raw_user_id,
        )
        global _warned_ephemeral
        if self.hash_user.ephemeral and not self.settings.log_raw_user_id and not _warned_ephemeral:
            _warned_ephemeral = True
            _log.warning(
                "config.ephemeral_hash_secret",
                hint="set PERSONA_MW_HASH_SECRET (or settings.hash_secret) so user hashes in "
                "logs are stable across processes and restarts",
            )
        self._default_profile = self.settings.default_profile

    # -- public API ---------------------------------------------------------------------------

    async def acompletion(
        self,
        *,
        user: str,
        model: str,
        messages: list[Message],
        surface: str = "python",
        jurisdictions: Sequence[str] = (),
        request_id: str | None = None,
        **llm_kwargs: Any,
    ) -> ModelResponse:
        """Personalise, call the model, enforce the bounds, record usage; return LiteLLM's
        ``ModelResponse``. A blocked input is answered with the rule's message and
        ``finish_reason="content_filter"``; upstream failures raise UpstreamError.
        ``jurisdictions`` adds laws for this call (codes, docs/compliance.md): a trusted
        gateway's say on where the user is, on top of the deployment's and the profile's."""
        ctx = await self.begin(
            user,
            model,
            messages,
            llm_kwargs,
            stream=False,
            surface=surface,
            jurisdictions=jurisdictions,
            request_id=request_id,
        )
        enforcer: ReplyEnforcer | None = None
        try:
            self._checks_after_send(ctx)
            await self.run_input_stages(ctx)
            enforcer = self.enforcer(ctx)
            if ctx.reply is not None:
                return synthetic_response(enforcer)
            started = time.perf_counter()
            response = await self.llm.acompletion(
                model=ctx.model,
                messages=ctx.prompt_messages,
                **signal_sent(ctx.llm_kwargs, ctx.request_sent),
            )
            ctx.timings_ms["model"] = _ms_since(started)
            await enforcer.settle()
            return await enforce_response(enforcer, response)
        except BaseException as exc:
            mark_failed(ctx, exc)
            ctx.error_status = http_status(exc) if isinstance(exc, Exception) else None
            raise
        finally:
            if enforcer is not None:
                enforcer.close()
            await self.finish(ctx)

    async def astream(
        self,
        *,
        user: str,
        model: str,
        messages: list[Message],
        surface: str = "python",
        jurisdictions: Sequence[str] = (),
        request_id: str | None = None,
        **llm_kwargs: Any,
    ) -> AsyncIterator[ModelResponseStream]:
        """Like :meth:`acompletion`, streamed: yields LiteLLM ``ModelResponseStream`` chunks.

        Output bounds are applied through a bounded hold-back, so no text a rule would block or
        redact is ever yielded. Closing the iterator early cancels the upstream call; usage is
        still recorded.
        """
        ctx = await self.begin(
            user,
            model,
            messages,
            llm_kwargs,
            stream=True,
            surface=surface,
            jurisdictions=jurisdictions,
            request_id=request_id,
        )
        try:
            self._checks_after_send(ctx)
            await self.run_input_stages(ctx)
            if ctx.reply is not None:
                for chunk in synthetic_chunks(self.enforcer(ctx)):
                    yield chunk
                return
            started = time.perf_counter()
            upstream = self.llm.astream(
                model=ctx.model,
                messages=ctx.prompt_messages,
                **signal_sent(ctx.llm_kwargs, ctx.request_sent),
            )
            enforced = self.enforce_stream(ctx, upstream, model_started=started)
            async with aclosing(enforced) as chunks:
                async for chunk in chunks:
                    yield chunk
        except BaseException as exc:
            mark_failed(ctx, exc)
            ctx.error_status = http_status(exc) if isinstance(exc, Exception) else None
            raise
        finally:
            await self.finish(ctx)

    async def aclose(self) -> None:
        """Close every stage that holds resources — finish stages first (usage recorders flush
        what they buffered), then the input and output stages (e.g. the dependence stage's
        due-state store) — and then the profile store. Each is closed once; one failing is
        logged (``middleware.close_failed``) and the others are still closed."""
        for part in (*self._all_stages(), self.store):
            aclose = getattr(part, "aclose", None)
            if aclose is None:
                continue
            try:
                await aclose()
            except Exception as exc:  # one part failing to close must not leave the rest open
                _log.error(
                    "middleware.close_failed",
                    part=getattr(part, "name", type(part).__name__),
                    error=repr(exc),
                )

    async def erase_user(self, user_id: str, *, keep: Collection[str] = ()) -> dict[str, Any]:
        """Erase everything stored about the user: the profile and every stage's data (usage,
        action state). Returns what each part removed. The right to erasure, in one call.
        ``keep`` names profile fields to keep (see :meth:`ProfileStore.delete`).

        The stages go first: on Redis the profile's delete also sweeps every key in the user's
        key index (usage, action state), so a stage erasing after it would find nothing left
        and report 0 removed although its data was just deleted."""
        parts: dict[str, Any] = {}
        for stage in self._all_stages():
            if isinstance(stage, HoldsUserData):
                parts[stage.name] = await stage.erase(user_id)
        erased: dict[str, Any] = {"profile": await self.store.delete(user_id, keep=keep), **parts}
        _log.info("user.erased", user=self.hash_user(user_id), parts=sorted(erased))
        return erased

    async def usage_report(self, user_id: str) -> dict[str, Any]:
        """What the stages know about the user's usage (their own data, for the user to see)."""
        report: dict[str, Any] = {}
        for stage in self._all_stages():
            if isinstance(stage, ReportsUsage):
                report[stage.name] = await stage.usage_report(user_id)
        return report

    def explain_policy(self, profile: Profile) -> dict[str, Any]:
        """Every rule in force for this profile, with its tier and why (from stages that can)."""
        return {
            stage.name: stage.explain(profile)
            for stage in self._all_stages()
            if isinstance(stage, ExplainsPolicy)
        }

    def rules_that(self, action: Action) -> list[str]:
        """The ids of the rules in this middleware's stages that take ``action`` (or that a
        user may set to take it), each once: e.g. ``rules_that("redact")`` for a host that
        cannot change text."""
        found: dict[str, None] = {}
        for stage in self._all_stages():
            if isinstance(stage, DeclaresRules):
                found.update(dict.fromkeys(stage.rules_that(action)))
        return list(found)

    def _all_stages(self) -> list[Any]:
        """Every stage once, finish stages first: closing and erasing go through the stores the
        finish stages write (the usage recorder flushes and erases) before the stages that
        cache what those hold (the dependence stage), so a load between the two finds nothing
        to bring back."""
        seen: list[Any] = []
        for stage in (*self.finish_stages, *self.input_stages, *self.output_stages):
            if not any(stage is s for s in seen):
                seen.append(stage)
        return seen

    async def __aenter__(self) -> Middleware:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def load_profile(self, user_id: str) -> tuple[Profile, ProfileSource]:
        """The user's profile and where it came from. Unknown users get the default profile; a
        store that cannot be reached gives the cached or default profile (or StoreError when
        ``settings.on_store_error == "fail_closed"``); a malformed stored profile is logged and
        replaced by the default."""
        try:
            found = await self.store.lookup(user_id)
            profile, source = found.profile, found.source
        except StoreError as exc:
            if self.settings.on_store_error == "fail_closed":
                raise
            _log.warning("profile.store_unavailable", user=self.hash_user(user_id), error=str(exc))
            return self.default_profile(user_id), "fallback"
        except ProfileError as exc:
            _log.error("profile.invalid_stored", user=self.hash_user(user_id), error=str(exc))
            return self.default_profile(user_id), "default"
        if profile is None:
            return self.default_profile(user_id), "default"
        return profile, source

    def default_profile(self, user_id: str) -> Profile:
        if not self._default_profile:
            return Profile.default(user_id)
        return parse_profile(self._default_profile, user_id=user_id)

    # -- the steps, public for integrations that drive a call themselves (LangChain, the LiteLLM
    # proxy plugin): begin → run_input_stages → (model) → enforce_reply | enforce_stream (or
    # open_filters, for a host's own chunk type) → finish.

    async def begin(
        self,
        user: str,
        model: str,
        messages: list[Message],
        llm_kwargs: dict[str, Any],
        *,
        stream: bool,
        surface: str,
        request: Mapping[str, Any] | None = None,
        jurisdictions: Sequence[str] = (),
        request_id: str | None = None,
    ) -> CallContext:
        """Validate the call, load the profile and make the call's context.

        The call's OpenAI parameters are ``request`` when given (a host whose own host calls
        the model passes that request, e.g. the proxy's ``data``), else ``llm_kwargs``; they
        decide where the call's notices go (with ``settings.notices``) and how many choices the
        reply has (``n``). ``request_id`` names the call in every log event and in the reply's
        id (a host passes its own, e.g. the proxy's call id); a new UUID when None."""
        _validate_call(user, model, messages)
        params = request if request is not None else llm_kwargs
        laws = _validate_jurisdictions(jurisdictions)
        started = time.perf_counter()
        profile, source = await self.load_profile(user)
        llm_kwargs.pop("stream", None)
        ctx = CallContext(
            request_id=request_id or str(uuid.uuid4()),
            user_id=user,
            user_hash=self.hash_user(user),
            model=model,
            messages=messages,
            prompt_messages=list(messages),
            stream=stream,
            llm_kwargs=llm_kwargs,
            profile=profile,
            profile_source=source,
            started_at=datetime.now(UTC),
            surface=surface,
            choices=_choices(params),
            jurisdictions=laws,
            notices_out_of_band=notices_out_of_band(params, self.settings.notices),
            _t0=started,
        )
        ctx.timings_ms["profile"] = _ms_since(started)
        return ctx

    async def run_input_stages(self, ctx: CallContext) -> None:
        """Run the input stages in order; stop at the first that answers (``ctx.reply``)."""
        for stage in self.input_stages:
            started = time.perf_counter()
            await stage(ctx)
            ctx.timings_ms[stage.name] = _ms_since(started)
            if ctx.reply is not None:
                ctx.outcome = "blocked"
                break

    def open_filters(self, ctx: CallContext) -> FilterChain:
        """Fresh output filters for one text of one call, chained."""
        return FilterChain([stage.open(ctx) for stage in self.output_stages])

    def _checks_after_send(self, ctx: CallContext) -> None:
        """Through LiteLLM, the input checks an input stage starts beside the model call wait
        until LiteLLM hands the model request to the provider (:func:`~persona_mw.llm.
        signal_sent`): started earlier, their CPU would delay it. Another client cannot say,
        so they start at once."""
        if isinstance(self.llm, LiteLLMClient):
            ctx.request_sent = asyncio.Event()

    def enforcer(self, ctx: CallContext) -> ReplyEnforcer:
        """The enforcement engine for this call's output (every choice, every field): what
        every host drives, after the input stages ran."""
        review = None
        for stage in self._reviewers:
            review = review or stage.reviewer(ctx)
        return ReplyEnforcer(
            ctx,
            lambda: self.open_filters(ctx),
            reasoning=self.settings.reasoning_content,
            review=review,
        )

    async def enforce_reply(self, ctx: CallContext, response: ModelResponse) -> ModelResponse:
        """The engine over a whole LiteLLM reply, in place (every choice, every field); returns
        ``response``. A block replaces that choice's text with the rule's message and sets its
        ``finish_reason="content_filter"``; notices frame the text, or go to
        ``response.persona_notices`` when out of band; the usage is recorded on ``ctx``.

        When an input stage answered (``ctx.reply``), ``response`` is that answer as a host
        delivered it (the LiteLLM proxy plugin answers through LiteLLM's ``mock_response``): our
        own text, so it is not re-checked; it gets the reply's finish_reason and no tokens.

        Input checks still running beside the model call are settled first: a late block
        replaces every choice with the input's answer.
        """
        enforcer = self.enforcer(ctx)
        try:
            await enforcer.settle()
            return await enforce_response(enforcer, response)
        finally:
            enforcer.close()

    async def enforce_stream(
        self,
        ctx: CallContext,
        upstream: AsyncIterator[ModelResponseStream],
        *,
        model_started: float | None = None,
    ) -> AsyncGenerator[ModelResponseStream, None]:
        """The engine over a streamed LiteLLM reply, chunk by chunk: :meth:`enforce_reply` with
        a hold-back, one filter per choice and per field.

        Nothing a rule would block or redact is ever yielded. A block ends that choice with the
        rule's message and ``finish_reason="content_filter"``; in band, notices go before each
        choice's first text and into its last chunk; chunks without choices (the usage chunk)
        pass through; usage is recorded on ``ctx``, estimated from the text when the stream
        carried none. A replayed answer to a blocked input (``ctx.reply``) is treated as in
        :meth:`enforce_reply`.

        The step owns ``upstream``: it closes it however the stream ends (block, end, error, or
        this generator being closed), which stops the model call. Callers that may stop early
        close this generator (``contextlib.aclosing``) so that, and the bookkeeping on ``ctx``,
        happen before :meth:`finish`.

        ``model_started`` is ``time.perf_counter()`` when the caller started the model call;
        given, the ``first_token`` and ``model`` timings are recorded. Integrations handed a
        stream their host opened (the LiteLLM proxy plugin) do not know it and leave it out.
        """
        enforcer = self.enforcer(ctx)
        try:
            async with aclosing(
                _enforce_stream(enforcer, upstream, model_started=model_started)
            ) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            enforcer.close()

    async def finish(self, ctx: CallContext) -> None:
        """Finish stages, then the request event. Never raises: a failing recorder must not
        turn a good reply into an error (it is logged instead). Input checks the call left
        running are cancelled."""
        cancel_checks(ctx)
        for stage in self.finish_stages:
            started = time.perf_counter()
            try:
                await stage(ctx)
            except Exception as exc:
                _log.error(
                    "stage.failed", stage=stage.name, request_id=ctx.request_id, error=repr(exc)
                )
            ctx.timings_ms[stage.name] = _ms_since(started)
        ctx.timings_ms["total"] = _ms_since(ctx._t0)
        record_call(ctx)  # OpenTelemetry spans; returns at once unless tracing is on
        error = ctx.outcome == "error"
        if _log.is_enabled_for(logging.WARNING if error else logging.INFO):  # else not built
            event = request_event(ctx, include_text=self.settings.log_message_text)
            if error:
                _log.warning(REQUEST_EVENT, **event)
            else:
                _log.info(REQUEST_EVENT, **event)


# -- helpers ----------------------------------------------------------------------------------


def _validate_jurisdictions(codes: Sequence[str]) -> tuple[str, ...]:
    from .compliance import known_codes
    from .errors import ConfigError

    if isinstance(codes, str):  # one code given bare
        codes = (codes,)
    unknown = [code for code in codes if code not in known_codes()]
    if unknown:
        raise ConfigError(
            f"unknown jurisdiction(s) {unknown}; use codes from {list(known_codes())}",
            field="jurisdictions",
        )
    return tuple(codes)


def _validate_call(user: str, model: str, messages: list[Message]) -> None:
    from .errors import ConfigError

    if not isinstance(user, str) or not user:
        raise ConfigError("`user` must be a non-empty string: the id of the end user", field="user")
    if not isinstance(model, str) or not model:
        raise ConfigError(
            "`model` must be a LiteLLM model name such as 'openai/gpt-4o-mini'", field="model"
        )
    if not isinstance(messages, list) or not messages:
        raise ConfigError(
            "`messages` must be a non-empty list of {'role', 'content'} dicts", field="messages"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ConfigError(
                f"messages[{i}] must be a dict with a 'role' (and usually 'content')",
                field="messages",
            )


def _choices(params: Mapping[str, Any]) -> int:
    n = params.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
