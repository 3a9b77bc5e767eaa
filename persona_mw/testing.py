"""Testing helpers, public API: a mock LLM client, a local OpenAI-style server, a per-call
context maker and a log capture.

:class:`MockLLM` is an LLM client the :class:`~persona_mw.Middleware` accepts (``llm=``), like
httpx's ``MockTransport``: a handler turns each request into the reply text, and LiteLLM itself
(its ``mock_response``) builds the response objects, streamed or not, so everything but the
remote model is the real code path, in process::

    mw = Middleware(llm=MockLLM(lambda request: "hello"))
    await mw.acompletion(user="u", model="any", messages=[...])

:func:`make_context` builds the one per-call :class:`~persona_mw.types.CallContext` a stage is
given, for testing a stage on its own.

:class:`FakeOpenAIServer` is a real HTTP server on loopback that speaks the OpenAI chat
completions wire format (plain and SSE streaming) and the moderations endpoint
(``/v1/moderations``, scored by the test's ``moderate`` function). Point LiteLLM, the ``openai``
client or LangChain at ``server.base_url`` and the only thing replaced is the remote model. It
records every request it receives, so a test can read the prompt that persona_mw really sent.
A guard model (a ``judge`` rule) is just another chat model: a ``reply`` function answers it
by the request's ``model``.

    with FakeOpenAIServer(reply=lambda request: "hello") as server:
        await mw.acompletion(user="u", model="openai/fake", messages=[...],
                             api_base=server.base_url, api_key="test")
        server.requests[-1]["messages"]   # what the model saw

The server and its wire format live in :mod:`persona_mw.fake_openai`; import them from here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog.testing

from .fake_openai import FakeChoice, FakeOpenAIServer, FakeToolCall, Fault, Moderate, echo_reply
from .profile import Profile
from .types import CallContext, Message, ProfileSource

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream

__all__ = [
    "FakeChoice",
    "FakeOpenAIServer",
    "FakeToolCall",
    "Fault",
    "MockLLM",
    "Moderate",
    "capture_logs",
    "echo_reply",
    "make_context",
]

#: What a :class:`MockLLM` handler returns: the reply's text, or an exception the call raises
#: (LiteLLM maps it, as it would a provider's error).
MockReply = str | BaseException


class MockLLM:
    """An in-process LLM client: ``handler(request)`` gives each reply (see the module docstring).

    ``request`` is the keyword arguments the middleware passed (``model``, ``messages`` with the
    personalised prompt, ...); every request is kept in :attr:`requests`, in order. The reply is
    made by ``litellm.acompletion(..., mock_response=...)``, streamed in LiteLLM's chunks when
    the call streams.
    """

    def __init__(self, handler: Callable[[dict[str, Any]], MockReply] = echo_reply) -> None:
        from .llm import LiteLLMClient

        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        # The real client: LiteLLM's calls, retries and error mapping; only the model is mocked.
        self._client = LiteLLMClient(num_retries=0)

    def _mocked(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(kwargs)
        provider = {} if "/" in str(kwargs.get("model")) else {"custom_llm_provider": "openai"}
        return {**kwargs, **provider, "mock_response": self.handler(kwargs)}

    async def acompletion(self, **kwargs: Any) -> ModelResponse:
        return await self._client.acompletion(**self._mocked(kwargs))

    async def astream(self, **kwargs: Any) -> AsyncIterator[ModelResponseStream]:
        async for chunk in self._client.astream(**self._mocked(kwargs)):
            yield chunk


def make_context(
    user_id: str = "user-1",
    messages: Sequence[Message] = ({"role": "user", "content": "hello"},),
    *,
    profile: Profile | dict[str, Any] | None = None,
    model: str = "mock-model",
    stream: bool = False,
    profile_source: ProfileSource = "store",
    **fields: Any,
) -> CallContext:
    """A fresh :class:`CallContext` as the middleware makes one per call, for testing a stage
    on its own. ``profile`` is a Profile, the fields of one (parsed and validated), or None for
    the default profile; ``fields`` set any other context field (``surface``, ``choices``, ...).
    """
    from .profile import parse_profile

    if profile is None:
        profile = Profile.default(user_id)
    elif not isinstance(profile, Profile):
        profile = parse_profile(profile, user_id=user_id)
    listed = [dict(m) for m in messages]
    return CallContext(
        request_id=fields.pop("request_id", f"test-{uuid.uuid4().hex[:12]}"),
        user_id=user_id,
        user_hash=fields.pop("user_hash", f"hash-{user_id}"),
        model=model,
        messages=listed,
        prompt_messages=[dict(m) for m in listed],
        stream=stream,
        llm_kwargs=fields.pop("llm_kwargs", {}),
        profile=profile,
        profile_source=profile_source,
        started_at=fields.pop("started_at", datetime.now(UTC)),
        **fields,
    )


@contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect persona_mw's structlog events as dicts (``structlog.testing.capture_logs``)."""
    with structlog.testing.capture_logs() as events:
        yield events
