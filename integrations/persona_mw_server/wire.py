"""OpenAI's chat-completions wire format: the request we accept and the JSON we answer with.

Dicts exist only here, at the HTTP edge: a request becomes keyword arguments for
:meth:`persona_mw.Middleware.acompletion` / ``astream`` once, and LiteLLM's response objects
become OpenAI JSON once. Only the OpenAI parameters below reach LiteLLM: a client can never pass
LiteLLM's own arguments (``api_base``, ``api_key``, ``mock_response``, ...) through the proxy.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from persona_mw.compliance import PROVENANCE_FIELD
from persona_mw.enforce import NOTICES_FIELD

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "PersonaNotice",
    "StreamOptions",
    "Usage",
    "chunk_json",
    "completion_json",
    "usage_chunk_json",
]

_PASSED_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "n",
)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Fields OpenAI defines that are not listed are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="a `model_name` from GET /v1/models")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(
        default=None, description="the end user's id; the X-Persona-User header takes precedence"
    )
    n: int | None = Field(
        default=None, ge=1, le=16, description="choices to generate; each is checked on its own"
    )
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def llm_kwargs(self) -> dict[str, Any]:
        """The parameters that go on to LiteLLM (only those the client set)."""
        kwargs = {
            name: getattr(self, name) for name in _PASSED_PARAMS if getattr(self, name) is not None
        }
        if self.stream and self.stream_options and self.stream_options.include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        return kwargs


# -- response schemas (for the OpenAPI document; answers are built as dicts below) -------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class PersonaNotice(BaseModel):
    """A notice the app must show beside the reply (out of band: structured replies)."""

    text: str
    source: str
    position: Literal["before", "after"]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"] | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage | None = None
    persona_notices: list[PersonaNotice] | None = Field(
        default=None,
        description="out of band only (response_format, tools, or the `notices` setting): the "
        "AI disclosure, reminders and crisis resources the app must show; also in the "
        "X-Persona-Notices header",
    )
    persona_provenance: dict[str, Any] | None = Field(
        default=None,
        description="the machine-readable marker (EU AI Act Art. 50(2)): ai_generated, generator, "
        "model (null when no model ran), policy_version, jurisdictions; also in the "
        "X-Persona-Provenance header",
    )


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a streamed answer; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None
    persona_notices: list[PersonaNotice] | None = Field(
        default=None,
        description="out of band only: on the first chunk and each chunk that ends a choice",
    )
    persona_provenance: dict[str, Any] | None = Field(
        default=None, description="the machine-readable marker, on the first chunk"
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- conversion -------------------------------------------------------------------------------


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for i, call in enumerate(calls):
        fn = getattr(call, "function", None)
        item: dict[str, Any] = {
            "index": getattr(call, "index", None)
            if getattr(call, "index", None) is not None
            else i,
            "id": getattr(call, "id", None),
            "type": getattr(call, "type", None) or "function",
            "function": {
                "name": getattr(fn, "name", None),
                "arguments": getattr(fn, "arguments", None) or "",
            },
        }
        out.append(item)
    return out


def _logprobs(choice: Any) -> dict[str, Any] | None:
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is None:
        return None
    if hasattr(logprobs, "model_dump"):
        dumped: dict[str, Any] = logprobs.model_dump(mode="json", exclude_none=False)
        return dumped
    return dict(logprobs) if isinstance(logprobs, dict) else None


def _notices(obj: Any, body: dict[str, Any]) -> None:
    notices = getattr(obj, NOTICES_FIELD, None)
    if notices is not None:
        body[NOTICES_FIELD] = notices
    marker = getattr(obj, PROVENANCE_FIELD, None)
    if marker is not None:
        body[PROVENANCE_FIELD] = marker


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    prompt, completion = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_json(response: ModelResponse, model: str) -> dict[str, Any]:
    """A non-streamed answer. ``model`` is the name the client asked for."""
    choices = []
    for choice in response.choices:
        message = choice.message
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        calls = _tool_calls(getattr(message, "tool_calls", None))
        if calls:
            out["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        reasoning = getattr(message, "reasoning_content", None)
        if reasoning:
            out["reasoning_content"] = reasoning
        choices.append(
            {
                "index": choice.index,
                "message": out,
                "logprobs": _logprobs(choice),
                "finish_reason": choice.finish_reason,
            }
        )
    body = {
        "id": response.id,
        "object": "chat.completion",
        "created": int(response.created or time.time()),
        "model": model,
        "system_fingerprint": getattr(response, "system_fingerprint", None),
        "choices": choices,
        "usage": _usage(getattr(response, "usage", None)),
    }
    _notices(response, body)
    return body


def chunk_json(
    chunk: ModelResponseStream, *, ident: str, created: int, model: str, with_usage: bool
) -> dict[str, Any]:
    """One streamed chunk, under the stream's one id."""
    choices = []
    for choice in chunk.choices:
        delta = choice.delta
        out: dict[str, Any] = {}
        if delta.role:
            out["role"] = delta.role
        if delta.content is not None:
            out["content"] = delta.content
        calls = _tool_calls(getattr(delta, "tool_calls", None))
        if calls:
            out["tool_calls"] = calls
        reasoning = getattr(delta, "reasoning_content", None)
        if reasoning:
            out["reasoning_content"] = reasoning
        choices.append(
            {
                "index": choice.index,
                "delta": out,
                "logprobs": _logprobs(choice),
                "finish_reason": choice.finish_reason,
            }
        )
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if with_usage:
        body["usage"] = None
    _notices(chunk, body)
    return body


def usage_chunk_json(
    *, ident: str, created: int, model: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The last chunk when the client asked for ``stream_options.include_usage``."""
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
