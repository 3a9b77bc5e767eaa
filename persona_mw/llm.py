"""The model call, through LiteLLM (imported lazily: it costs ~3 s and ~200 MB).

:class:`LiteLLMClient` is the default :class:`~persona_mw.types.LLMClient`. Given a LiteLLM
``Router`` it routes through that (the server's ``model_list``); otherwise it calls
``litellm.acompletion``. LiteLLM's exceptions become :class:`~persona_mw.errors.UpstreamError`
at this edge; cancellation passes through untouched and closes the upstream stream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream
    from litellm.router import Router

__all__ = ["LiteLLMClient", "import_litellm", "upstream_error"]


def import_litellm() -> Any:
    """Import litellm with the offline price list (no network at import)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def upstream_error(exc: Exception, model: str) -> UpstreamError:
    """Turn whatever LiteLLM raised into our error, keeping the HTTP status when there is one."""
    litellm = import_litellm()
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, litellm.Timeout | TimeoutError):
        return UpstreamTimeout(message, model=model, status_code=status or 504)
    return UpstreamError(
        message, model=model, status_code=status if isinstance(status, int) else None
    )


class LiteLLMClient:
    """Calls ``litellm.acompletion`` (or ``router.acompletion``), mapping errors to ours."""

    def __init__(self, *, router: Router | None = None, **defaults: Any) -> None:
        self.router = router
        self.defaults = defaults

    def _target(self) -> Any:
        return self.router if self.router is not None else import_litellm()

    async def acompletion(self, **kwargs: Any) -> ModelResponse:
        model = str(kwargs.get("model"))
        try:
            response = await self._target().acompletion(**self.defaults, **kwargs)
        except UpstreamError:
            raise
        except Exception as exc:
            raise upstream_error(exc, model) from exc
        return response

    async def astream(self, **kwargs: Any) -> AsyncIterator[ModelResponseStream]:
        model = str(kwargs.get("model"))
        try:
            stream = await self._target().acompletion(**self.defaults, **kwargs, stream=True)
        except Exception as exc:
            raise upstream_error(exc, model) from exc
        try:
            async for chunk in stream:
                yield chunk
        except Exception as exc:
            raise upstream_error(exc, model) from exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
