"""The OpenAI routes: ``POST /v1/chat/completions``, ``POST /v1/responses`` and the model list.

Every call goes through :class:`persona_mw.Middleware` (profile → bounds → personalisation →
model → output bounds → usage): ``acompletion`` for a whole reply, ``astream`` for a stream,
which a :class:`~..streaming.Pump` runs in a task of its own so the first chunk (and the
notices it carries as headers) is known before the status line is sent. Server-sent events are
framed by FastAPI's own :func:`fastapi.sse.format_sse_event`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.sse import format_sse_event

from persona_mw.compliance import PROVENANCE_FIELD, PROVENANCE_HEADER
from persona_mw.enforce import NOTICES_FIELD, NOTICES_HEADER
from persona_mw.llm import import_litellm
from persona_mw.observability import get_logger

from ..asgi import OPEN_STREAMS
from ..deps import ERRORS, JURISDICTION_HEADER, ServerState, State, Who, allow, end_user
from ..errors import ApiError, from_exception
from ..responses import ResponseObject, ResponsesRequest, response_events, response_json
from ..streaming import END, Pump
from ..wire import (
    ChatCompletion,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    chunk_json,
    completion_json,
    usage_chunk_json,
)

__all__ = ["router"]

_log = get_logger("persona_mw.server")

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletion,
            "description": "The answer; with `stream: true` a "
            "text/event-stream of ChatCompletionChunk events ending in `data: [DONE]`.",
        },
        **ERRORS,
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    who: Who,
    state: State,
    x_persona_user: str | None = Header(default=None, description="the end user; wins over `user`"),
    x_persona_jurisdiction: str | None = Header(
        default=None,
        description="law codes that apply to this user, comma-separated (a trusted "
        "gateway's header; needs server.trust_jurisdiction_header)",
    ),
) -> Response:
    """Chat completion, personalised for the end user and held within the bounds."""
    allow(who, "complete")
    laws = _request_laws(x_persona_jurisdiction, state.config.server.trust_jurisdiction_header)
    user = end_user(state, x_persona_user or body.user, body.model)
    kwargs = body.llm_kwargs()
    kwargs["timeout"] = state.config.server.upstream_timeout_s
    call = {
        "user": user,
        "model": body.model,
        "messages": body.messages,
        "surface": "server",
        "jurisdictions": laws,
        **kwargs,
    }
    if not body.stream:
        response = await state.mw.acompletion(**call)
        return JSONResponse(
            completion_json(response, body.model), headers=_notice_headers(response)
        )
    pump, first = await _start(state, call)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return _event_stream(
        _chat_events(
            pump,
            first,
            model=body.model,
            messages=body.messages,
            include_usage=include_usage,
            choices=body.n or 1,
        ),
        first,
    )


@router.post(
    "/v1/responses",
    response_model=None,
    responses={
        200: {
            "model": ResponseObject,
            "description": "The Response; with `stream: true` a text/event-stream of "
            "Responses events ending in `response.completed` (its status `incomplete` "
            "when a rule stopped the reply).",
        },
        **ERRORS,
    },
)
async def create_response(
    body: ResponsesRequest,
    who: Who,
    state: State,
    x_persona_user: str | None = Header(default=None, description="the end user; wins over `user`"),
) -> Response:
    """OpenAI's Responses API, on the same path as chat completions (profile, bounds on
    input and output, signals). Stateless: no `previous_response_id`, no stored responses."""
    allow(who, "complete")
    user = end_user(state, x_persona_user or body.user, body.model)
    messages, kwargs = body.chat_call()
    kwargs["timeout"] = state.config.server.upstream_timeout_s
    call = {"user": user, "model": body.model, "messages": messages, "surface": "server", **kwargs}
    if not body.stream:
        reply = await state.mw.acompletion(**call)
        return JSONResponse(response_json(body, reply), headers=_notice_headers(reply))
    pump, first = await _start(state, call)
    return _event_stream(_response_events(pump, first, body), first)


@router.get("/v1/models/{model_id}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, who: Who, state: State) -> dict[str, Any]:
    """One served model (404 with the served names when it is not one of them)."""
    allow(who, "read_models")
    if model_id not in state.models:
        raise ApiError(
            404,
            f"model {model_id!r} is not served here; the models are {', '.join(state.models)}",
            code="model_not_found",
            param="model_id",
        )
    return _model_card(model_id)


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(who: Who, state: State) -> dict[str, Any]:
    """The model names clients may ask for (the config's `model_list`)."""
    allow(who, "read_models")
    return {"object": "list", "data": [_model_card(m) for m in state.models]}


# -- helpers ------------------------------------------------------------------------------------


def _request_laws(header: str | None, trusted: bool) -> tuple[str, ...]:
    """The laws a trusted gateway says apply to this request (none without the header)."""
    if header is None:
        return ()
    if not trusted:
        raise ApiError(
            400,
            f"the {JURISDICTION_HEADER} header is not accepted here: set "
            "server.trust_jurisdiction_header: true when a gateway you run sets it (and strips "
            "it from end users), or set the profile's `jurisdictions`",
            param=JURISDICTION_HEADER,
        )
    from persona_mw.compliance import known_codes

    codes = tuple(code.strip() for code in header.split(",") if code.strip())
    unknown = [code for code in codes if code not in known_codes()]
    if unknown:
        raise ApiError(
            400,
            f"unknown jurisdiction(s) {unknown} in {JURISDICTION_HEADER}; use codes from "
            f"{list(known_codes())}",
            param=JURISDICTION_HEADER,
        )
    return codes


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": int(time.time()), "owned_by": "persona_mw"}


async def _start(state: ServerState, call: dict[str, Any]) -> tuple[Pump[Any], Any]:
    """The stream started in a task of its own, and its first chunk: an error before it (a
    refused input, an upstream that fails at once) is still an ordinary error response."""
    pump: Pump[Any] = Pump(state.mw.astream(**call), tracked=state.streams)
    try:
        return pump, await pump.get()
    except BaseException:
        pump.cancel()
        raise


def _event_stream(events: AsyncIterator[bytes], first: Any) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **_notice_headers(first)},
    )


def _notice_headers(reply: Any) -> dict[str, str]:
    """The notices out of band and the provenance marker, as headers too (JSON, ASCII-escaped:
    headers are latin-1)."""
    notices = getattr(reply, NOTICES_FIELD, None)
    headers = {NOTICES_HEADER: json.dumps(notices)} if notices else {}
    marker = getattr(reply, PROVENANCE_FIELD, None)
    if marker is not None:
        headers[PROVENANCE_HEADER] = json.dumps(marker)
    return headers


def _data(body: Any) -> bytes:
    return format_sse_event(data_str=json.dumps(body))


async def _response_events(
    pump: Pump[Any], first: Any, request: ResponsesRequest
) -> AsyncIterator[bytes]:
    """Responses events (``event:`` names each, as OpenAI does); a failure after the status
    line is sent in-band as an ``error`` event, and the upstream call stops when the client
    goes away."""
    OPEN_STREAMS.inc()
    try:
        async for event in response_events(pump, first, request):
            yield format_sse_event(event=event["type"], data_str=json.dumps(event))
    except Exception as exc:
        error = from_exception(exc)
        _log.warning("stream.failed", error=error.message, status=error.status)
        failed = {"type": "error", "sequence_number": 0, **error.body()["error"]}
        yield format_sse_event(event="error", data_str=json.dumps(failed))
    finally:
        pump.cancel()
        OPEN_STREAMS.dec()


async def _chat_events(
    pump: Pump[Any],
    first: Any,
    *,
    model: str,
    messages: list[dict[str, Any]],
    include_usage: bool,
    choices: int = 1,
) -> AsyncIterator[bytes]:
    """OpenAI's chat stream: ``data: <chunk>`` ..., maybe a usage chunk, ``data: [DONE]``.

    Without a usage chunk to wait for, the answer ends with the chunk that carries the last of
    its ``choices`` finish_reasons (nothing follows it): the client gets ``[DONE]`` at once
    while the stream's end-of-call work (LiteLLM's bookkeeping, ~1.7 ms here; usage recording)
    goes on in the pump's task, which shutdown still waits for.
    """
    OPEN_STREAMS.inc()
    ident, created = f"chatcmpl-{int(time.time() * 1000)}", int(time.time())
    usage: Any = None
    text: list[str] = []
    finished: set[int] = set()
    detached = False
    try:
        item = first
        if item is not END:
            ident = getattr(item, "id", None) or ident
            created = int(getattr(item, "created", None) or created)
        while item is not END:
            usage = getattr(item, "usage", None) or usage
            if item.choices:
                text.extend(c.delta.content for c in item.choices if c.delta.content)
                yield _data(
                    chunk_json(
                        item, ident=ident, created=created, model=model, with_usage=include_usage
                    )
                )
                finished |= {c.index for c in item.choices if c.finish_reason is not None}
                if not include_usage and len(finished) >= choices:
                    pump.detach()
                    detached = True
                    break
            item = await pump.get()
        if include_usage:
            prompt, completion = _usage_counts(usage, model, messages, "".join(text))
            yield _data(
                usage_chunk_json(
                    ident=ident,
                    created=created,
                    model=model,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                )
            )
        yield format_sse_event(data_str="[DONE]")
    except Exception as exc:  # the status line is sent already: report in-band, as OpenAI does
        error = from_exception(exc)
        _log.warning("stream.failed", error=error.message, status=error.status)
        yield _data(error.body())
    finally:
        if not detached:
            pump.cancel()  # no-op when finished; on disconnect it stops the upstream call
        OPEN_STREAMS.dec()


def _usage_counts(
    usage: Any, model: str, messages: list[dict[str, Any]], text: str
) -> tuple[int, int]:
    """Token counts for the usage chunk: the model's own when the stream carried them, else
    LiteLLM's tokenizer estimate."""
    if usage is not None:
        return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    litellm = import_litellm()
    try:
        return (
            int(litellm.token_counter(model=model, messages=messages)),
            int(litellm.token_counter(model=model, text=text)) if text else 0,
        )
    except Exception:
        return sum(len(str(m.get("content", ""))) for m in messages) // 4, (len(text) + 3) // 4
