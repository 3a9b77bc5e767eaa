"""persona_mw for LangChain: a drop-in callback handler and a personalising chat-model wrapper.

- :class:`PersonaCallbackHandler` / :class:`PersonaSyncCallbackHandler`: one line,
  ``callbacks=[PersonaCallbackHandler(mw)]``, on any chat model, chain or agent. Records usage,
  aborts blocked inputs and outputs by raising; cannot rewrite prompts or replies.
- :class:`PersonaChatModel`: wraps any ``BaseChatModel``; personalises, enforces the bounds
  (streams included, with the hold-back) and records usage. The full enforcement.

The end user comes from the run config: ``configurable={"persona_user": ...}`` (wrapper) or
``metadata={"persona_user": ...}`` (both), or a ``default_user``. A sync app closes the
middleware with ``close()`` (or ``with chat:``), which writes the buffered usage. See
docs/langchain.md.
"""

from .callbacks import PersonaCallbackHandler, PersonaSyncCallbackHandler
from .chat_model import PersonaChatModel
from .messages import USER_KEY

__all__ = [
    "USER_KEY",
    "PersonaCallbackHandler",
    "PersonaChatModel",
    "PersonaSyncCallbackHandler",
]
