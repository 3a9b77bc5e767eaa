"""persona_mw for LangChain: a drop-in callback handler and a personalising chat-model wrapper.

- :class:`PersonaCallbackHandler` / :class:`PersonaSyncCallbackHandler`: one line,
  ``callbacks=[PersonaCallbackHandler(mw)]``, on any chat model, chain or agent. Records usage,
  aborts blocked inputs and outputs by raising; cannot rewrite prompts or replies.
- :class:`PersonaChatModel`: wraps any ``BaseChatModel``; personalises, enforces the bounds
  (streams included, with the hold-back) and records usage. The full enforcement.

The end user comes from the run config: ``configurable={"persona_user": ...}`` (wrapper) or
``metadata={"persona_user": ...}`` (both), or a ``default_user``. A sync app closes the
middleware with ``close()`` (or ``with chat:``), which writes the buffered usage; it runs
the middleware's other coroutines (a profile write, a usage read) with :func:`run_sync`, on the
loop its sync calls use. See docs/langchain.md.
"""

from ._portal import run_sync
from .callbacks import PersonaCallbackHandler, PersonaSyncCallbackHandler
from .chat_model import PersonaChatModel
from .messages import USER_KEY

__all__ = [
    "USER_KEY",
    "PersonaCallbackHandler",
    "PersonaChatModel",
    "PersonaSyncCallbackHandler",
    "run_sync",
]
