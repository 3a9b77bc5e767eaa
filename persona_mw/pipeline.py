"""The middleware: load profile → input stages → model → output stages → finish stages → log.

:class:`Middleware` holds only configuration and long-lived parts (store, stages, LLM client);
everything about one call lives in its :class:`~persona_mw.types.CallContext`. Streamed and
non-streamed replies go through the same output filters, so a bound gives the same verdict
however the text arrives.

Only the call's orchestration lives here; what a call needs from elsewhere is in its own
module: argument checks (:mod:`.calls`), where the profile comes from (:mod:`.profile_loading`),
what is asked of every stage at once (:mod:`.stage_set`), the reply engine (:mod:`.enforce`).
Why still ~430 lines: the steps are the public API that every host drives, and their
docstrings are its reference.
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

from .calls import choices, ms_since, validate_call, validate_jurisdictions
from .enforce import FilterChain as _FilterChain
from .enforce import (
    ReplyEnforcer,
    cancel_checks,
    enforce_response,
    mark_failed,
    notices_out_of_band,
    synthetic_chunks,
    synthetic_response,
)
from .enforce import enforce_stream as _enforce_stream
from .errors import http_status
from .llm import LiteLLMClient, signal_sent
from .observability import REQUEST_EVENT, UserHasher, get_logger, request_event
from .profile import Profile
from .profile_loading import ProfileLoader
from .stage_set import (
    close_all,
    erase_user,
    every_stage,
    explain_policy,
    rules_that,
    usage_report,
)
from .stores.cache import CachedProfileStore
from .stores.memory import MemoryProfileStore
from .tracing import record_call
from .types import (
    Action,
    CallContext,
    FinishStage,
    InputStage,
    LLMClient,
    Message,
    OutputStage,
    ProfileSource,
    ProfileStore,
    ReviewsOutput,
)

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream

    from .config import Settings

__all__ = ["Middleware"]

_log = get_logger("persona_mw")


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
        self.profiles = ProfileLoader(self.store, self.settings, self.hash_user)

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
                **signal_sent(ctx.llm_kwargs, ctx.request_sent if ctx.pending else None),
            )
            ctx.timings_ms["model"] = ms_since(started)
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
                **signal_sent(ctx.llm_kwargs, ctx.request_sent if ctx.pending else None),
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
        await close_all([*self._all_stages(), self.store])

    async def erase_user(self, user_id: str, *, keep: Collection[str] = ()) -> dict[str, Any]:
        """Erase everything stored about the user: the profile and every stage's data (usage,
        action state). Returns what each part removed. The right to erasure, in one call.
        ``keep`` names profile fields to keep (see :meth:`ProfileStore.delete`)."""
        return await erase_user(
            self._all_stages(), self.store, user_id, keep=keep, hash_user=self.hash_user
        )

    async def usage_report(self, user_id: str) -> dict[str, Any]:
        """What the stages know about the user's usage (their own data, for the user to see)."""
        return await usage_report(self._all_stages(), user_id)

    def explain_policy(self, profile: Profile) -> dict[str, Any]:
        """Every rule in force for this profile, with its tier and why (from stages that can)."""
        return explain_policy(self._all_stages(), profile)

    def rules_that(self, action: Action) -> list[str]:
        """The ids of the rules in this middleware's stages that take ``action`` (or that a
        user may set to take it), each once: e.g. ``rules_that("redact")`` for a host that
        cannot change text."""
        return rules_that(self._all_stages(), action)

    def _all_stages(self) -> list[Any]:
        return every_stage(self.input_stages, self.output_stages, self.finish_stages)

    async def __aenter__(self) -> Middleware:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def load_profile(self, user_id: str) -> tuple[Profile, ProfileSource]:
        """The user's profile and where it came from (:meth:`ProfileLoader.load`: the default
        for unknown users, a fallback when the store is down, the default for a malformed
        stored profile)."""
        return await self.profiles.load(user_id)

    def default_profile(self, user_id: str) -> Profile:
        """The deployment's default profile (``settings.default_profile``) for ``user_id``."""
        return self.profiles.default(user_id)

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
        validate_call(user, model, messages)
        params = request if request is not None else llm_kwargs
        laws = validate_jurisdictions(jurisdictions)
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
            choices=choices(params),
            jurisdictions=laws,
            notices_out_of_band=notices_out_of_band(params, self.settings.notices),
            _t0=started,
        )
        ctx.timings_ms["profile"] = ms_since(started)
        return ctx

    async def run_input_stages(self, ctx: CallContext) -> None:
        """Run the input stages in order; stop at the first that answers (``ctx.reply``)."""
        for stage in self.input_stages:
            started = time.perf_counter()
            await stage(ctx)
            ctx.timings_ms[stage.name] = ms_since(started)
            if ctx.reply is not None:
                ctx.outcome = "blocked"
                break

    def open_filters(self, ctx: CallContext) -> _FilterChain:
        """Fresh output filters for one text of one call, chained."""
        return _FilterChain([stage.open(ctx) for stage in self.output_stages])

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
            ctx.timings_ms[stage.name] = ms_since(started)
        ctx.timings_ms["total"] = ms_since(ctx._t0)
        record_call(ctx)  # OpenTelemetry spans; returns at once unless tracing is on
        error = ctx.outcome == "error"
        if _log.is_enabled_for(logging.WARNING if error else logging.INFO):  # else not built
            event = request_event(ctx, include_text=self.settings.log_message_text)
            if error:
                _log.warning(REQUEST_EVENT, **event)
            else:
                _log.info(REQUEST_EVENT, **event)
