"""The drop-in: ``callbacks=[PersonaCallbackHandler(mw)]`` on any chat model, chain or agent.

A LangChain callback observes; it cannot change what the model is sent or what it says (return
values are discarded). What it *can* do, with ``raise_error=True``, is abort the call by raising.
So the handlers:

- ``on_chat_model_start``: load the profile and run the middleware's input stages on the
  messages (converted once to OpenAI dicts). A block raises :class:`persona_mw.InputBlocked`
  (tier, rule id, user-facing message) before the model is called. Personalisation runs too but
  its rewritten prompt cannot be sent: the call is recorded with an empty exposure and the
  original messages, because that is what the model saw.
- ``on_llm_new_token``: each streamed token through the shared enforcement engine
  (:meth:`persona_mw.Middleware.enforcer`, the one every host drives); a block raises
  :class:`persona_mw.OutputBlocked` and ends the stream. Tokens before the one that completed a
  blocked phrase have already reached the caller (a callback has no hold-back).
- ``on_llm_end``: every generation of the reply, tool-call arguments included, through the
  engine (a block raises OutputBlocked: ``invoke`` raises instead of returning the reply), then
  the finish stages (usage recording) and one ``request.completed`` log event, as for any
  persona_mw call.
- ``on_llm_error``: the failed call is recorded with outcome ``error`` / ``cancelled``.

A callback cannot redact. So a handler refuses, when it is made, a middleware whose policy has
rules that redact (the ``pii`` pack, say): :class:`persona_mw.ConfigError` names them and points
to :class:`persona_mw_langchain.PersonaChatModel`, which applies them. A redaction the handler
meets anyway (a pack a user switched on for themselves, a custom stage) is recorded and logged
with action ``log`` and a message saying it was not applied, never as a redaction that did not
happen.

Per-call state lives in a dict keyed by LangChain's ``run_id`` and is removed when the run ends
or fails, so one handler serves any number of concurrent calls.

Use :class:`PersonaCallbackHandler` (async) with ``ainvoke`` / ``astream`` and
:class:`PersonaSyncCallbackHandler` with sync code: LangChain only logs what an async handler
raises during a sync ``.invoke()``, so it could not abort there. The handling exists once, in
the async handler; the sync one runs it on the integration's private loop. For personalised prompts,
notices and a real hold-back use :class:`persona_mw_langchain.PersonaChatModel`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
    LLMResult,
)

from persona_mw import CallContext, ConfigError, Exposure, Middleware
from persona_mw.enforce import Piece, ReplyEnforcer, mark_failed

from ._calls import begin, block_error, finish, ms_since, resolve_user, run_input_stages
from ._portal import run_sync
from .messages import Conversation, reasoning_of, tool_pieces

__all__ = ["PersonaCallbackHandler", "PersonaSyncCallbackHandler"]


@dataclass(slots=True)
class _Run:
    ctx: CallContext
    #: The engine decides; the handler only reads its verdicts (it cannot change the text).
    enforcer: ReplyEnforcer
    model_started: float = field(default_factory=time.perf_counter)
    streamed: list[str] = field(default_factory=list)


class PersonaCallbackHandler(AsyncCallbackHandler):
    """The handler for ``ainvoke`` / ``astream`` / async agents, and the one implementation:
    :class:`PersonaSyncCallbackHandler` runs these methods for sync code.

    ``middleware``: a :class:`persona_mw.Middleware` (e.g. from
    :func:`persona_mw.build_middleware`) whose policy has no ``redact`` rules (a handler cannot
    change text: :class:`persona_mw.ConfigError` otherwise). ``default_user``: the user for
    calls whose metadata names none; the user is ``config={"metadata": {"persona_user":
    "<id>"}}`` otherwise. The only state is the runs in flight, keyed by run id.
    """

    raise_error = True

    def __init__(self, middleware: Middleware, *, default_user: str | None = None) -> None:
        _refuse_redactions(middleware)
        self.middleware = middleware
        self.default_user = default_user
        self._runs: dict[UUID, _Run] = {}

    @property
    def open_runs(self) -> int:
        """Runs started and not yet ended (their contexts held until the end or error)."""
        return len(self._runs)

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Input stages for one run; raises InputBlocked (after recording) on a block."""
        mw = self.middleware
        params = kwargs.get("invocation_params") or {}
        conversation = Conversation(messages[0])
        ctx = await begin(
            mw,
            user=resolve_user(None, metadata, self.default_user),
            model=_model_name(serialized, params),
            messages=conversation.wire,
            stream=bool(params.get("stream") or params.get("streaming")),
            request_id=str(run_id),
        )
        enforcer = None
        try:
            await run_input_stages(mw, ctx)
            if ctx.reply is None:
                enforcer = mw.enforcer(ctx)
                if enforcer.reviews:
                    raise ConfigError(
                        "this policy checks replies with a model (moderation or judge rules "
                        "with stage: output), and a callback cannot hold the reply back while "
                        "they check it: wrap the model in persona_mw_langchain.PersonaChatModel",
                        field="bounds",
                    )
                # A callback cannot hold the reply back: the model-backed input checks are
                # awaited here, before the model starts (no concurrency on this host).
                await enforcer.settle()
        except BaseException as exc:
            mark_failed(ctx, exc)
            await finish(mw, ctx)
            raise
        _unsent(ctx)
        _redactions_not_applied(ctx)
        if ctx.reply is not None:
            ctx.finish_reason = ctx.reply_finish_reason
            await self._settle(ctx, blocked="input")
        self._runs[run_id] = _Run(ctx=ctx, enforcer=enforcer or mw.enforcer(ctx))

    async def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Feed one streamed token; when the filters stopped, the run is recorded and the
        block raised."""
        run = self._runs.get(run_id)
        if not isinstance(token, str):  # content blocks (output_version="v1"): their text
            token = "".join(
                p if isinstance(p, str) else str(p.get("text") or "")
                for p in token
                if isinstance(p, str) or p.get("type") == "text"
            )
        if run is None or not token:
            return
        run.ctx.stream = True
        run.streamed.append(token)
        run.enforcer.feed(0, Piece(content=token))
        if run.enforcer.stopped(0):
            del self._runs[run_id]
            await self._settle(_filtered(run, "".join(run.streamed)), blocked="output")

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """The reply through the engine (streamed: what it still holds; whole: every
        generation), then the run is recorded (and a reply that broke a bound raised)."""
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        ctx = run.ctx
        generations = response.generations[0] if response.generations else []
        generation = generations[0] if generations else None
        text = generation.text if generation is not None else "".join(run.streamed)
        if run.streamed:
            # the text came token by token; the other fields arrive only here, whole
            rest = _piece(generation) if generation is not None else Piece()
            run.enforcer.feed(
                0, Piece(reasoning=rest.reasoning, tool_calls=rest.tool_calls, finish_reason="stop")
            )
        else:  # every choice, every field (tool-call arguments included)
            for index, each in enumerate(generations):
                run.enforcer.whole(index, _piece(each))
        _usage(ctx, generation, response)
        _redactions_not_applied(ctx)
        if run.enforcer.any_blocked:
            await self._settle(_filtered(run, text), blocked="output")
            return
        run.enforcer.close()
        ctx.timings_ms["model"] = ms_since(run.model_started)
        ctx.output_text = text  # what the caller got: the handler changed nothing
        info = (generation.generation_info or {}) if generation is not None else {}
        meta = (
            generation.message.response_metadata if isinstance(generation, ChatGeneration) else {}
        )
        ctx.finish_reason = meta.get("finish_reason") or info.get("finish_reason")
        await self._settle(ctx)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:  # already recorded (we raised it) or never started
            return
        run.ctx.output_text = "".join(run.streamed)
        mark_failed(run.ctx, error)
        await self._settle(run.ctx)

    async def _settle(
        self, ctx: CallContext, *, blocked: Literal["input", "output"] | None = None
    ) -> None:
        """Record the run (the finish stages and the request event); for a block, raise."""
        await finish(self.middleware, ctx)
        if blocked is not None:
            raise block_error(ctx, stage=blocked)


class PersonaSyncCallbackHandler(BaseCallbackHandler):
    """The handler for sync code: aborts sync ``invoke`` / ``stream`` as well as the async
    calls. Each event runs :class:`PersonaCallbackHandler`'s method on persona_mw_langchain's
    private event loop (see :mod:`persona_mw_langchain._portal`). Same arguments."""

    raise_error = True

    def __init__(self, middleware: Middleware, *, default_user: str | None = None) -> None:
        self._handler = PersonaCallbackHandler(middleware, default_user=default_user)

    @property
    def middleware(self) -> Middleware:
        return self._handler.middleware

    @property
    def open_runs(self) -> int:
        """Runs started and not yet ended (their contexts held until the end or error)."""
        return self._handler.open_runs

    def close(self) -> None:
        """Close the middleware when the app is done: write the buffered usage and close the
        stores, on the private loop this handler's calls ran on (where the usage writer and a
        Redis store's connections live). Blocks until done. The middleware is the app's: this
        closes it for every handler and wrapper sharing it."""
        run_sync(self.middleware.aclose())

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        run_sync(self._handler.on_chat_model_start(serialized, messages, **kwargs))

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        run_sync(self._handler.on_llm_new_token(token, **kwargs))

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        run_sync(self._handler.on_llm_end(response, **kwargs))

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        run_sync(self._handler.on_llm_error(error, **kwargs))


def _refuse_redactions(mw: Middleware) -> None:
    """A handler cannot change text, so a deployer's rule that redacts would be detected and
    not applied on every call: refuse it up front instead of logging a bound that never held."""
    rules = mw.rules_that("redact")
    if rules:
        raise ConfigError(
            f"a LangChain callback handler cannot redact, and this policy has rules that do: "
            f"{', '.join(rules)}. Wrap the chat model in "
            "persona_mw_langchain.PersonaChatModel(inner=model, middleware=mw), which applies "
            "them, or give those rules another action (block, or log) in the policy",
            field="bounds.policies",
        )


def _model_name(serialized: Mapping[str, Any] | None, params: Mapping[str, Any]) -> str:
    for key in ("model", "model_name"):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    name = (serialized or {}).get("name") or params.get("_type")
    return str(name) if name else "unknown"


def _unsent(ctx: CallContext) -> None:
    """A callback cannot send the personalised prompt or show notices: record what the model
    really got (the original messages, shaped by no profile part)."""
    ctx.state["langchain_callback"] = {
        "prompt_rewritten": ctx.prompt_messages != ctx.messages,
        "notices_not_shown": [n.source for n in ctx.notices],
    }
    ctx.prompt_messages = list(ctx.messages)
    ctx.exposure = Exposure()
    ctx.instructions.clear()
    ctx.notices.clear()


#: What a decision the callback could not carry out says instead of "redact".
NOT_APPLIED = (
    "redaction not applied: a LangChain callback cannot change text; "
    "wrap the model in PersonaChatModel to redact"
)


def _redactions_not_applied(ctx: CallContext) -> None:
    """Record redactions for what they were here: detected, not applied (the text the model got
    or the caller saw is unchanged)."""
    ctx.decisions[:] = [
        replace(d, action="log", message=NOT_APPLIED) if d.action == "redact" else d
        for d in ctx.decisions
    ]


def _piece(generation: Generation) -> Piece:
    message = generation.message if isinstance(generation, ChatGeneration) else None
    if message is None:
        return Piece(content=generation.text, finish_reason="stop")
    return Piece(
        content=message.text,
        reasoning=reasoning_of(message),
        tool_calls=tool_pieces(message),
        finish_reason="stop",
    )


def _filtered(run: _Run, text: str) -> CallContext:
    ctx = run.ctx
    run.enforcer.close()
    _redactions_not_applied(ctx)
    ctx.outcome = "filtered"
    ctx.finish_reason = "content_filter"
    ctx.output_text = text
    ctx.timings_ms["model"] = ms_since(run.model_started)
    return ctx


def _usage(ctx: CallContext, generation: Any, response: LLMResult) -> None:
    usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
    if usage:
        ctx.prompt_tokens = int(usage.get("input_tokens") or 0)
        ctx.completion_tokens = int(usage.get("output_tokens") or 0)
        return
    token_usage = (response.llm_output or {}).get("token_usage") or {}
    ctx.prompt_tokens = int(token_usage.get("prompt_tokens") or 0)
    ctx.completion_tokens = int(token_usage.get("completion_tokens") or 0)
