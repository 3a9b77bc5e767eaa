"""The middleware: load profile → input stages → model → output stages → finish stages → log.

:class:`Middleware` holds only configuration and long-lived parts (store, stages, LLM client);
everything about one call lives in its :class:`~persona_mw.types.CallContext`. Streamed and
non-streamed replies go through the same output filters, so a bound gives the same verdict
however the text arrives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from .errors import PersonaError, ProfileError, StoreError
from .llm import LiteLLMClient
from .observability import REQUEST_EVENT, UserHasher, request_event
from .profile import Profile, parse_profile
from .stores.cache import CachedProfileStore
from .stores.memory import MemoryProfileStore
from .types import (
    CallContext,
    ExplainsPolicy,
    FinishStage,
    HoldsUserData,
    InputStage,
    LLMClient,
    Message,
    OutputFilter,
    OutputStage,
    ProfileSource,
    ProfileStore,
    ReportsUsage,
)

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream
    from litellm.types.utils import Usage

    from .config import Settings

__all__ = [
    "FilterChain",
    "Middleware",
    "block_message",
    "blocked_ending",
    "notices_text",
    "with_notices",
]

_log = structlog.get_logger("persona_mw")
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
            if self.settings.profile_cache_ttl_s > 0
            and not isinstance(inner, MemoryProfileStore)
            and not isinstance(inner, CachedProfileStore)
            else inner
        )
        self.llm: LLMClient = llm if llm is not None else LiteLLMClient()
        self.input_stages = tuple(input_stages)
        self.output_stages = tuple(output_stages)
        self.finish_stages = tuple(finish_stages)
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
        **llm_kwargs: Any,
    ) -> ModelResponse:
        """Personalise, call the model, enforce the bounds, record usage; return LiteLLM's
        ``ModelResponse``. A blocked input is answered with the rule's message and
        ``finish_reason="content_filter"``; upstream failures raise UpstreamError."""
        ctx = await self.begin(user, model, messages, llm_kwargs, stream=False, surface=surface)
        try:
            await self.run_input_stages(ctx)
            if ctx.reply is not None:
                return _synthetic_response(ctx)
            started = time.perf_counter()
            response = await self.llm.acompletion(
                model=ctx.model, messages=ctx.prompt_messages, **ctx.llm_kwargs
            )
            ctx.timings_ms["model"] = _ms_since(started)
            return self.enforce_reply(ctx, response)
        except BaseException as exc:
            _mark_failed(ctx, exc)
            raise
        finally:
            await self.finish(ctx)

    async def astream(
        self,
        *,
        user: str,
        model: str,
        messages: list[Message],
        surface: str = "python",
        **llm_kwargs: Any,
    ) -> AsyncIterator[ModelResponseStream]:
        """Like :meth:`acompletion`, streamed: yields LiteLLM ``ModelResponseStream`` chunks.

        Output bounds are applied through a bounded hold-back, so no text a rule would block or
        redact is ever yielded. Closing the iterator early cancels the upstream call; usage is
        still recorded.
        """
        ctx = await self.begin(user, model, messages, llm_kwargs, stream=True, surface=surface)
        try:
            await self.run_input_stages(ctx)
            if ctx.reply is not None:
                for chunk in _synthetic_chunks(ctx):
                    yield chunk
                return
            started = time.perf_counter()
            upstream = self.llm.astream(
                model=ctx.model, messages=ctx.prompt_messages, **ctx.llm_kwargs
            )
            enforced = self.enforce_stream(ctx, upstream, model_started=started)
            async with aclosing(enforced) as chunks:
                async for chunk in chunks:
                    yield chunk
        except BaseException as exc:
            _mark_failed(ctx, exc)
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
            if isinstance(self.store, CachedProfileStore):
                found = await self.store.lookup(user_id)
                profile, source = found.profile, found.source
            else:
                profile, source = await self.store.get(user_id), "store"
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
        return profile, source  # type: ignore[return-value]

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
    ) -> CallContext:
        """Validate the call, load the profile and make the call's context."""
        _validate_call(user, model, messages)
        started = time.perf_counter()
        profile, source = await self.load_profile(user)
        llm_kwargs.pop("stream", None)
        ctx = CallContext(
            request_id=str(llm_kwargs.pop("request_id", None) or uuid.uuid4()),
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
        """Fresh output filters for one call, chained."""
        return FilterChain([stage.open(ctx) for stage in self.output_stages])

    def enforce_reply(self, ctx: CallContext, response: ModelResponse) -> ModelResponse:
        """The output stages over a whole reply, in place; returns ``response``.

        A whole reply is one big chunk through the same :class:`FilterChain` as a stream, so a
        bound's verdict cannot depend on transport. A block replaces the text with the rule's
        message and sets ``finish_reason="content_filter"``; notices frame the reply; the usage
        is recorded on ``ctx``.

        When an input stage answered (``ctx.reply``), ``response`` is that answer as a host
        delivered it (the LiteLLM proxy plugin answers through LiteLLM's ``mock_response``): our
        own text, so it is not re-checked; it gets the reply's finish_reason and no tokens.
        """
        if ctx.reply is not None:
            return _replayed_reply(ctx, response)
        started = time.perf_counter()
        choice = response.choices[0]
        message = choice.message
        text = message.content if isinstance(message.content, str) else ""
        chain = self.open_filters(ctx)
        released = chain.feed(text) + chain.finish() if text else ""
        if chain.stopped:
            released = block_message(ctx)
            choice.finish_reason = "content_filter"
            ctx.outcome = "filtered"
        if text or ctx.notices:
            message.content = with_notices(ctx, released)
        ctx.output_text = message.content or ""
        ctx.finish_reason = choice.finish_reason
        _record_usage(ctx, getattr(response, "usage", None))
        ctx.timings_ms["output"] = _ms_since(started)
        return response

    async def enforce_stream(
        self,
        ctx: CallContext,
        upstream: AsyncIterator[ModelResponseStream],
        *,
        model_started: float | None = None,
    ) -> AsyncGenerator[ModelResponseStream, None]:
        """The output stages over a streamed reply: :meth:`enforce_reply`, chunk by chunk.

        Filters hold text back, so nothing a rule would block or redact is ever yielded. A block
        ends the stream with the rule's message and ``finish_reason="content_filter"``; notices
        go before the first chunk and into the last; chunks without choices (the usage chunk)
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
        steps: _FilteredStream | _ReplayedStream = (
            _ReplayedStream(ctx)
            if ctx.reply is not None
            else _FilteredStream(ctx, self.open_filters(ctx), model_started)
        )
        try:
            async for piece in upstream:
                for chunk in steps.feed(piece):
                    yield chunk
                if steps.done:
                    return
        finally:
            steps.close()
            aclose = getattr(upstream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def finish(self, ctx: CallContext) -> None:
        """Finish stages, then the request event. Never raises: a failing recorder must not
        turn a good reply into an error (it is logged instead)."""
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
        event = request_event(ctx, include_text=self.settings.log_message_text)
        if ctx.outcome in ("error",):
            _log.warning(REQUEST_EVENT, **event)
        else:
            _log.info(REQUEST_EVENT, **event)


class FilterChain:
    """Output filters in a row: each one's released text is the next one's input."""

    def __init__(self, filters: Sequence[OutputFilter]) -> None:
        self.filters = list(filters)

    @property
    def stopped(self) -> bool:
        return any(f.stopped for f in self.filters)

    def feed(self, text: str) -> str:
        for i, f in enumerate(self.filters):
            text = f.feed(text) if text else ""
            if f.stopped:
                return self._drain(i + 1, text)
        return text

    def finish(self) -> str:
        text = ""
        for i, f in enumerate(self.filters):
            if text:
                text = f.feed(text)
            if not f.stopped:
                text += f.finish()
            if f.stopped:
                return self._drain(i + 1, text)
        return text

    def _drain(self, start: int, text: str) -> str:
        """A filter stopped: what it released before the stop still passes the later filters."""
        for f in self.filters[start:]:
            text = (f.feed(text) if text else "") + ("" if f.stopped else f.finish())
            if f.stopped:
                break
        return text


class _FilteredStream:
    """One streamed reply through the output filters (:meth:`Middleware.enforce_stream`).

    ``feed`` takes each upstream chunk and returns what may be yielded now (nothing while the
    filters hold text back; the notices before the first chunk); ``close`` leaves the reply's
    text, tokens and timings on the context however the stream ended.
    """

    def __init__(self, ctx: CallContext, chain: FilterChain, model_started: float | None) -> None:
        self.ctx = ctx
        self.chain = chain
        self.model_started = model_started
        self.header: dict[str, Any] = {}
        self.out: list[str] = []  # the text yielded so far
        self.filter_ms = 0.0
        self.done = False

    def feed(self, piece: ModelResponseStream) -> list[ModelResponseStream]:
        ready = self._start(piece) if not self.header else []
        usage = getattr(piece, "usage", None)
        _record_usage(self.ctx, usage)
        if not piece.choices:  # the usage chunk (stream_options.include_usage): no text
            ready.append(piece)
            return ready
        choice = piece.choices[0]
        delta = choice.delta
        started = time.perf_counter()
        released = self.chain.feed(delta.content) if delta.content else ""
        if choice.finish_reason is not None and not self.chain.stopped:
            released += self.chain.finish()
        self.filter_ms += _ms_since(started)
        if self.chain.stopped:
            ready.append(self._blocked(released))
            return ready
        if choice.finish_reason is not None:
            after = notices_text(self.ctx, "after")
            if after:
                released += _then("".join(self.out) + released, after)
            self.ctx.finish_reason = choice.finish_reason
        elif not (
            released
            or delta.tool_calls
            or delta.function_call
            or (delta.role and not self.out)
            or usage is not None  # older LiteLLM sends the usage chunk with one empty choice
        ):
            return ready  # everything held back: nothing to send yet
        self.out.append(released)
        delta.content = released or None
        ready.append(piece)
        return ready

    def close(self) -> None:
        ctx = self.ctx
        ctx.output_text = "".join(self.out)
        ctx.timings_ms["output"] = self.filter_ms
        if self.model_started is not None:
            ctx.timings_ms["model"] = _ms_since(self.model_started)
        if not ctx.completion_tokens:
            ctx.completion_tokens = _estimate_tokens(ctx.output_text)

    def _start(self, piece: ModelResponseStream) -> list[ModelResponseStream]:
        """The first chunk: its id, model and time for the chunks we make; the notices before."""
        self.header = {"id": piece.id, "model": piece.model, "created": piece.created}
        if self.model_started is not None:
            self.ctx.timings_ms["first_token"] = _ms_since(self.model_started)
        before = notices_text(self.ctx, "before")
        if not before:
            return []
        self.out.append(before + "\n\n")
        return [self._chunk(before + "\n\n")]

    def _blocked(self, released: str) -> ModelResponseStream:
        """The last chunk: what the filters released before the stop, the rule's message, and the
        notices after the reply (crisis resources must survive a blocked reply)."""
        self.done = True
        self.ctx.outcome = "filtered"
        self.ctx.finish_reason = "content_filter"
        text = released + blocked_ending(self.ctx, "".join(self.out) + released)
        self.out.append(text)
        return self._chunk(text, "content_filter")

    def _chunk(self, text: str, finish_reason: str | None = None) -> ModelResponseStream:
        from litellm import ModelResponseStream
        from litellm.types.utils import Delta, StreamingChoices

        return ModelResponseStream(
            **self.header,
            choices=[
                StreamingChoices(
                    index=0,
                    delta=Delta(content=text, role="assistant"),
                    finish_reason=finish_reason,
                )
            ],
        )


class _ReplayedStream:
    """A host streaming back an input stage's answer (``ctx.reply``), as the LiteLLM proxy does
    with ``mock_response``: our own text, passed through unchecked, ending with the reply's
    finish_reason; no model ran, so no tokens are counted."""

    done = False

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.out: list[str] = []

    def feed(self, piece: ModelResponseStream) -> list[ModelResponseStream]:
        if getattr(piece, "usage", None) is not None:
            piece.usage = _no_usage()  # LiteLLM's mock_response invents some
        if piece.choices:
            choice = piece.choices[0]
            self.out.append(choice.delta.content or "")
            if choice.finish_reason is not None:
                choice.finish_reason = self.ctx.reply_finish_reason
                self.ctx.finish_reason = self.ctx.reply_finish_reason
        return [piece]

    def close(self) -> None:
        self.ctx.output_text = "".join(self.out)


# -- helpers ----------------------------------------------------------------------------------


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


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _record_usage(ctx: CallContext, usage: Any) -> None:
    if usage is not None:
        ctx.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        ctx.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)


def _mark_failed(ctx: CallContext, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        ctx.outcome = "cancelled"
    elif isinstance(exc, Exception):
        ctx.outcome = "error"
        ctx.error = type(exc).__name__ if not isinstance(exc, PersonaError) else str(exc)


def block_message(ctx: CallContext) -> str:
    """The user-facing message of the last blocking decision (what replaces blocked text)."""
    for decision in reversed(ctx.decisions):
        if decision.action == "block" and decision.message:
            return decision.message
    return "[response withheld by a content policy]"


def blocked_ending(ctx: CallContext, so_far: str) -> str:
    """How a streamed reply stopped by a block ends, after the text ``so_far`` the user already
    has: the rule's message (after a blank line, unless there is no text yet or it ends with
    one) and the notices after the reply — crisis resources survive a block. The whole text
    then reads as ``with_notices`` frames a whole blocked reply (except that text already
    ending in a blank line gets no second one)."""
    after = notices_text(ctx, "after")
    return _then(so_far, block_message(ctx)) + (f"\n\n{after}" if after else "")


def _then(so_far: str, text: str) -> str:
    """``text`` to follow ``so_far`` as its own paragraph: one blank line between them, none
    before the first text or after text that already ends with one."""
    return ("\n\n" if so_far and not so_far.endswith("\n\n") else "") + text


def notices_text(ctx: CallContext, position: str) -> str:
    """The notices to put ``"before"`` or ``"after"`` the reply, joined."""
    return "\n\n".join(n.text for n in ctx.notices if n.position == position)


def with_notices(ctx: CallContext, text: str) -> str:
    """``text`` framed by the call's notices."""
    parts = [notices_text(ctx, "before"), text, notices_text(ctx, "after")]
    return "\n\n".join(p for p in parts if p)


def _synthetic_response(ctx: CallContext) -> ModelResponse:
    """The answer an input stage gave instead of the model (e.g. a block)."""
    from litellm import ModelResponse
    from litellm.types.utils import Choices, Message

    assert ctx.reply is not None
    text = with_notices(ctx, ctx.reply)
    ctx.output_text = text
    ctx.finish_reason = ctx.reply_finish_reason
    return ModelResponse(
        id=f"chatcmpl-{ctx.request_id}",
        model=ctx.model,
        choices=[
            Choices(
                index=0,
                message=Message(role="assistant", content=text),
                finish_reason=ctx.reply_finish_reason,
            )
        ],
        usage=_no_usage(),
    )


def _replayed_reply(ctx: CallContext, response: ModelResponse) -> ModelResponse:
    """A host's delivery of an input stage's answer: trusted, with the reply's finish_reason and
    no tokens (no model ran; LiteLLM's ``mock_response`` invents some)."""
    choice = response.choices[0]
    choice.finish_reason = ctx.reply_finish_reason
    response.usage = _no_usage()
    ctx.output_text = choice.message.content or ""
    ctx.finish_reason = ctx.reply_finish_reason
    return response


def _no_usage() -> Usage:
    from litellm.types.utils import Usage

    return Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def _synthetic_chunks(ctx: CallContext) -> list[ModelResponseStream]:
    from litellm import ModelResponseStream
    from litellm.types.utils import Delta, StreamingChoices

    assert ctx.reply is not None
    text = with_notices(ctx, ctx.reply)
    ctx.output_text = text
    ctx.finish_reason = ctx.reply_finish_reason
    header = {"id": f"chatcmpl-{ctx.request_id}", "model": ctx.model}
    return [
        ModelResponseStream(
            **header,
            choices=[StreamingChoices(index=0, delta=Delta(content=text, role="assistant"))],
        ),
        ModelResponseStream(
            **header,
            choices=[
                StreamingChoices(index=0, delta=Delta(), finish_reason=ctx.reply_finish_reason)
            ],
        ),
    ]
