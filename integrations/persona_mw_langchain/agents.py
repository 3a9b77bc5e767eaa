"""Agent middleware for ``langchain`` 1.x (``create_agent``): every model call of the agent goes
through :class:`~persona_mw_langchain.PersonaChatModel`. Needs the ``langchain-agents`` extra.

    from langchain.agents import create_agent
    from persona_mw_langchain.agents import PersonaAgentMiddleware

    agent = create_agent(model, tools, middleware=[PersonaAgentMiddleware(mw)])
    agent.invoke({"messages": [...]}, config={"configurable": {"persona_user": "ada"}})

``wrap_model_call`` / ``awrap_model_call`` swap the request's model for the wrapper, so the
agent's ``bind_tools`` / structured output bind to the wrapper and the call runs the stages.
Streaming does not bypass it: LangGraph's ``stream_mode="messages"`` reads tokens from the
model's callbacks, and the wrapper calls the inner model without callbacks, so the only tokens
the stream sees are the filtered ones, after the hold-back.

The user is, in order: ``configurable`` / ``metadata`` ``persona_user`` of the agent's run
config, ``persona_user`` in the agent's runtime context (``context=`` of ``invoke``, a mapping
or an object with that attribute), then ``default_user``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from langchain.agents.middleware import AgentMiddleware, ModelRequest
from langchain.agents.middleware.types import ModelResponse

from persona_mw import Middleware

from ._portal import run_sync
from .chat_model import PersonaChatModel
from .messages import USER_KEY

__all__ = ["PersonaAgentMiddleware"]


class PersonaAgentMiddleware(AgentMiddleware):
    """Runs each of the agent's model calls through persona_mw's stages."""

    def __init__(self, middleware: Middleware, *, default_user: str | None = None) -> None:
        super().__init__()
        self.middleware = middleware
        self.default_user = default_user

    @property
    def name(self) -> str:
        return "persona_mw"

    def close(self) -> None:
        """Close the middleware after sync agent runs (``invoke``, ``stream``): write the
        buffered usage and close the stores, on the private loop those runs used (see
        :meth:`PersonaChatModel.close`). After async runs, ``await middleware.aclose()``. The
        middleware is the app's: this closes it for everything sharing it."""
        run_sync(self.middleware.aclose())

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        return handler(self._personalised(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(self._personalised(request))

    def _personalised(self, request: ModelRequest) -> ModelRequest:
        if isinstance(request.model, PersonaChatModel):
            return request
        wrapper = PersonaChatModel(
            inner=request.model,
            middleware=self.middleware,
            default_user=_context_user(request) or self.default_user,
        )
        return request.override(model=wrapper)


def _context_user(request: ModelRequest) -> str | None:
    context = getattr(getattr(request, "runtime", None), "context", None)
    user = (
        context.get(USER_KEY) if isinstance(context, Mapping) else getattr(context, USER_KEY, None)
    )
    return user if isinstance(user, str) and user else None
