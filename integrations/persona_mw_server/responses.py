"""OpenAI's Responses API (``POST /v1/responses``) at the HTTP edge, on the chat-completions path.

A Responses request becomes a chat request once, with LiteLLM's own Responses bridge
(``LiteLLMCompletionResponsesConfig``: instructions → system message, input items → messages,
``max_output_tokens`` → ``max_tokens``, tools → chat tools); it then goes through
:meth:`persona_mw.Middleware.acompletion` / ``astream`` exactly like a chat completion (profile,
personalisation, bounds on input and output, usage and signals). The checked reply becomes a
Response object with the same bridge; a stream becomes Responses events here, from the engine's
already-checked chunks (this module only re-frames them, it decides nothing).

Not served: stored responses (``previous_response_id``, ``store``, ``GET /v1/responses/{id}``),
background mode and hosted tools — the server keeps no conversation state.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from persona_mw.compliance import PROVENANCE_FIELD
from persona_mw.enforce import NOTICES_FIELD

from .streaming import END, Pump

if TYPE_CHECKING:
    from litellm import ModelResponse

__all__ = ["ResponseObject", "ResponsesRequest", "response_events", "response_json"]

_PASSED_PARAMS = (
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
)


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``. Fields OpenAI defines that are not listed are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="a `model_name` from GET /v1/models")
    input: str | list[dict[str, Any]] = Field(
        description="the user's text, or a list of input items (messages, function call outputs)"
    )
    instructions: str | None = Field(
        default=None, description="the developer's system message (before the persona's)"
    )
    stream: bool = False
    user: str | None = Field(
        default=None, description="the end user's id; the X-Persona-User header takes precedence"
    )
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None

    def optional_params(self) -> dict[str, Any]:
        """The Responses parameters the client set (what LiteLLM's bridge reads)."""
        return {n: getattr(self, n) for n in _PASSED_PARAMS if getattr(self, n) is not None}

    def chat_call(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The chat messages and the parameters for LiteLLM, through LiteLLM's bridge. Only
        OpenAI chat parameters come out: nothing of LiteLLM's own (``api_base``, ...)."""
        from litellm.responses.litellm_completion_transformation.transformation import (
            LiteLLMCompletionResponsesConfig,
        )

        bridge = LiteLLMCompletionResponsesConfig
        chat = bridge.transform_responses_api_request_to_chat_completion_request(
            model=self.model,
            input=self.input,  # type: ignore[arg-type]  # JSON as the client sent it; LiteLLM checks
            responses_api_request=self.optional_params(),  # type: ignore[arg-type]
            stream=self.stream,
        )
        messages = [dict(m) for m in chat.pop("messages")]
        kwargs = {
            name: chat[name]
            for name in (
                "temperature",
                "top_p",
                "max_tokens",
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "response_format",
            )
            if chat.get(name) is not None
        }
        return messages, kwargs


class ResponseObject(BaseModel):
    """A Response (the OpenAPI schema; answers are built by LiteLLM's bridge)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "response"
    created_at: int
    model: str
    status: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    persona_notices: list[dict[str, str]] | None = Field(
        default=None, description="notices shown beside the reply, when out of band"
    )
    persona_provenance: dict[str, Any] | None = Field(
        default=None,
        description="the machine-readable marker (EU AI Act Art. 50(2)): ai_generated, generator, "
        "model (null when no model ran), policy_version, jurisdictions; also in the "
        "X-Persona-Provenance header",
    )


def response_json(request: ResponsesRequest, reply: ModelResponse) -> dict[str, Any]:
    """A checked chat reply as a Response object (with ``persona_notices`` when out of band,
    and the ``persona_provenance`` marker)."""
    from litellm.responses.litellm_completion_transformation.transformation import (
        LiteLLMCompletionResponsesConfig,
    )

    bridge = LiteLLMCompletionResponsesConfig
    response = bridge.transform_chat_completion_response_to_responses_api_response(
        request_input=request.input,  # type: ignore[arg-type]
        responses_api_request=request.optional_params(),  # type: ignore[arg-type]
        chat_completion_response=reply,
    )
    body: dict[str, Any] = response.model_dump(mode="json", exclude_none=True)
    body["id"] = "resp_" + str(body.get("id", "")).removeprefix("chatcmpl-")
    body["model"] = request.model
    body.setdefault("tools", [])
    body.setdefault("parallel_tool_calls", True)
    body.setdefault("tool_choice", "auto")
    if request.instructions is not None:
        body["instructions"] = request.instructions
    notices = getattr(reply, NOTICES_FIELD, None)
    if notices:
        body[NOTICES_FIELD] = notices
    marker = getattr(reply, PROVENANCE_FIELD, None)
    if marker is not None:
        body[PROVENANCE_FIELD] = marker
    return body


async def response_events(
    pump: Pump[Any], first: Any, request: ResponsesRequest
) -> AsyncIterator[dict[str, Any]]:
    """The Responses stream: ``response.created`` … ``response.output_text.delta`` …
    ``response.completed``, from the engine's checked chunks (choice 0; a Response has one).

    Tool calls are sent as whole ``function_call`` items at the end: the engine releases a
    choice's arguments only once they are checked, when the choice ends."""
    from litellm import ModelResponse
    from litellm.types.utils import ChatCompletionMessageToolCall, Choices, Function, Message

    sequence = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, **fields}

    created = int(time.time())
    ident = str(getattr(first, "id", None) or f"{created}")
    message_id = "msg_" + ident.removeprefix("chatcmpl-")
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish_reason: str | None = None
    usage: Any = None
    notices: Any = getattr(first, NOTICES_FIELD, None)
    marker: Any = getattr(first, PROVENANCE_FIELD, None)  # the engine marks the first chunk

    def snapshot(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        reply = ModelResponse(
            id=ident,
            created=created,
            model=request.model,
            choices=[
                Choices(
                    index=0,
                    message=Message(
                        role="assistant",
                        content="".join(text) or None,
                        tool_calls=[
                            ChatCompletionMessageToolCall(
                                id=c["id"],
                                type="function",
                                function=Function(name=c["name"], arguments=c["arguments"]),
                            )
                            for c in calls.values()
                        ]
                        or None,
                    ),
                    finish_reason=finish_reason or "stop",
                )
            ],
        )
        if usage is not None:
            reply.usage = usage
        if notices:
            setattr(reply, NOTICES_FIELD, notices)
        if marker is not None:
            setattr(reply, PROVENANCE_FIELD, marker)
        body = response_json(request, reply)
        body["status"] = status
        body["output"] = output if status != "completed" else body["output"]
        body["created_at"] = created
        return body

    yield event("response.created", response=snapshot("in_progress", []))
    yield event("response.in_progress", response=snapshot("in_progress", []))
    item = {"id": message_id, "type": "message", "role": "assistant", "status": "in_progress"}
    yield event("response.output_item.added", output_index=0, item={**item, "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event(
        "response.content_part.added",
        item_id=message_id,
        output_index=0,
        content_index=0,
        part=part,
    )
    chunk = first
    while chunk is not END:
        usage = getattr(chunk, "usage", None) or usage
        notices = getattr(chunk, NOTICES_FIELD, None) or notices
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                text.append(delta.content)
                yield event(
                    "response.output_text.delta",
                    item_id=message_id,
                    output_index=0,
                    content_index=0,
                    delta=delta.content,
                    logprobs=[],
                )
            for call in delta.tool_calls or ():
                calls[call.index] = {
                    "id": call.id or f"call_{call.index}",
                    "name": call.function.name or "",
                    "arguments": call.function.arguments or "",
                }
            finish_reason = choice.finish_reason or finish_reason
        chunk = await pump.get()
    full = "".join(text)
    done_part = {**part, "text": full}
    yield event(
        "response.output_text.done",
        item_id=message_id,
        output_index=0,
        content_index=0,
        text=full,
        logprobs=[],
    )
    yield event(
        "response.content_part.done",
        item_id=message_id,
        output_index=0,
        content_index=0,
        part=done_part,
    )
    done_item = {**item, "status": "completed", "content": [done_part]}
    yield event("response.output_item.done", output_index=0, item=done_item)
    final = snapshot("completed", [])
    output: list[dict[str, Any]] = [done_item]
    for extra in final["output"]:
        if extra.get("type") == "function_call":
            index = len(output)
            yield event("response.output_item.added", output_index=index, item=extra)
            yield event("response.output_item.done", output_index=index, item=extra)
            output.append(extra)
    final["output"] = output
    if finish_reason == "content_filter":
        final["status"] = "incomplete"
        final["incomplete_details"] = {"reason": "content_filter"}
    # always ``response.completed`` (its status says incomplete): the openai client's stream
    # helper finishes only on that event
    yield event("response.completed", response=final)
