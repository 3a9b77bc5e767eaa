"""The model call, through LiteLLM (imported lazily: it costs ~3 s and ~200 MB).

:class:`LiteLLMClient` is the default :class:`~persona_mw.types.LLMClient`. Built from a
``model_list`` (:meth:`LiteLLMClient.from_model_list`) it routes through a LiteLLM ``Router``;
otherwise it calls ``litellm.acompletion``. LiteLLM's exceptions become
:class:`~persona_mw.errors.UpstreamError` at this edge; cancellation passes through untouched and
closes the upstream stream.

**Direct routes.** A model name with a single deployment and nothing for the Router to decide
(no ``router_settings``, no rate limits, tags, weights or credentials by reference — see
:func:`direct_routes`) is called with ``litellm.acompletion`` and that deployment's parameters.
The outcome is the same (one deployment; retries and timeouts are LiteLLM's, applied by the
call), and the call skips the Router's per-request bookkeeping, which measured ~30 % of LiteLLM's
throughput here (docs/benchmarks.md). Any ``router_settings`` keep every name on the Router.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import UpstreamError, UpstreamTimeout
from .metrics import CallMetrics

if TYPE_CHECKING:
    from litellm import ModelResponse, ModelResponseStream
    from litellm.router import Router

__all__ = [
    "LiteLLMClient",
    "direct_routes",
    "import_litellm",
    "sent_soon",
    "signal_sent",
    "upstream_error",
]

#: ``litellm_params`` a deployment may have and still be called directly: where to send the
#: call and its credentials, given by value — what the Router itself forces onto the call — and
#: ``timeout``, which the Router ranks below the request's own (so does the direct route).
#: Anything else (call defaults such as ``temperature`` or ``extra_headers``, which the Router
#: merges with the request's; ``max_retries``, which would turn off the retries the Router adds;
#: ``stream_timeout``; ``rpm``/``tpm``, ``max_parallel_requests``, ``order``, ``weight``,
#: ``tags``, budgets, ``litellm_credential_name``) keeps the Router, and so does any value
#: written ``os.environ/NAME``, which only the Router resolves.
DIRECT_PARAMS = frozenset(
    {
        "model", "api_base", "api_key", "api_version", "organization", "custom_llm_provider",
        "timeout", "region_name", "aws_region_name", "aws_access_key_id",
        "aws_secret_access_key", "aws_session_token", "vertex_project", "vertex_location",
        "vertex_credentials", "input_cost_per_token", "output_cost_per_token",
    }
)  # fmt: skip
#: Of those, what a request's own arguments override (on the Router too).
_CALL_DEFAULTS = frozenset({"timeout"})


def direct_routes(
    model_list: Sequence[Mapping[str, Any]], router_settings: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Model name -> deployment ``litellm_params`` for the names the Router has nothing to decide
    for: exactly one deployment, no wildcard, only :data:`DIRECT_PARAMS`, no ``model_info`` or
    other entry fields, and no ``router_settings`` at all (set any to keep the Router)."""
    if router_settings:
        return {}
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for entry in model_list:
        groups.setdefault(str(entry.get("model_name")), []).append(entry)
    routes = {}
    for name, entries in groups.items():
        entry = entries[0]
        params = entry.get("litellm_params")
        if (
            len(entries) == 1
            and "*" not in name
            and set(entry) == {"model_name", "litellm_params"}
            and isinstance(params, Mapping)
            and set(params) <= DIRECT_PARAMS
            and not any(str(v).startswith("os.environ/") for v in params.values())
        ):
            routes[name] = dict(params)
    return routes


def import_litellm() -> Any:
    """Import litellm with the offline price list (no network at import)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


#: Loop turns from LiteLLM's pre-API-call event to the request on the wire, with room to spare:
#: the HTTP client opens (or takes) a connection and writes from a task of its own — measured
#: one turn on a kept-alive connection, five on a new one (aiohttp, LiteLLM 1.110).
SEND_TURNS = 8


def signal_sent(kwargs: dict[str, Any], sent: asyncio.Event | None) -> dict[str, Any]:
    """``kwargs`` for a LiteLLM call that sets ``sent`` once the request is out: LiteLLM's
    pre-API-call log event, through the per-call ``logger_fn`` (the ``callbacks`` argument
    would add a per-call object to LiteLLM's global callback lists), then :func:`sent_soon`.
    A ``logger_fn`` of the caller's own still gets every event. ``sent`` None: ``kwargs``."""
    if sent is None:
        return kwargs
    announce = sent_soon(sent)
    theirs = kwargs.get("logger_fn")

    def logger_fn(details: dict[str, Any]) -> None:
        if details.get("log_event_type") == "pre_api_call":
            announce()
        if callable(theirs):
            theirs(details)

    return {**kwargs, "logger_fn": logger_fn}


def sent_soon(sent: asyncio.Event) -> Callable[[], None]:
    """For a host that hears LiteLLM's pre-API-call event (:func:`signal_sent`, the LiteLLM
    proxy plugin's ``log_pre_api_call``): a function, safe to call from any thread and more
    than once, that sets ``sent`` :data:`SEND_TURNS` turns of the event loop later, for the
    HTTP client to send the request (asyncio says nothing when a socket was written). Made on
    the event loop that waits for ``sent``."""
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def after(turns: int) -> None:
        if turns:
            loop.call_soon(after, turns - 1)
        else:
            sent.set()

    def announce() -> None:
        if sent.is_set():
            return
        if threading.get_ident() == loop_thread:
            loop.call_soon(after, SEND_TURNS)
        else:  # a provider without an async client logs from LiteLLM's executor
            loop.call_soon_threadsafe(after, SEND_TURNS)  # (wakes the loop: a syscall)

    return announce


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


def _counted(error: UpstreamError) -> UpstreamError:
    """``error``, counted in ``persona_mw_upstream_errors_total`` (made here, counted once)."""
    CallMetrics.default().observe_upstream_error(error)
    return error


class LiteLLMClient:
    """Calls ``litellm.acompletion`` (or ``router.acompletion``), mapping errors to ours.

    ``direct`` maps model names to deployment parameters called without the Router (see the
    module docstring); ``defaults`` are keyword arguments of every call (e.g. ``timeout``).
    """

    def __init__(
        self,
        *,
        router: Router | None = None,
        direct: Mapping[str, Mapping[str, Any]] | None = None,
        **defaults: Any,
    ) -> None:
        self.router = router
        self.direct = {name: dict(params) for name, params in (direct or {}).items()}
        self.defaults = defaults
        # Each direct route split once: what a request's own arguments override (the
        # deployment's timeout, over the client's defaults) and what the deployment decides.
        self._routes = {
            name: (
                {**defaults, **{k: v for k, v in params.items() if k in _CALL_DEFAULTS}},
                {k: v for k, v in params.items() if k not in _CALL_DEFAULTS},
            )
            for name, params in self.direct.items()
        }

    @classmethod
    def from_model_list(
        cls,
        model_list: Sequence[Mapping[str, Any]],
        router_settings: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> LiteLLMClient:
        """A Router over ``model_list`` (LiteLLM proxy config shape) with ``router_settings``,
        plus direct routes for the names it has nothing to decide for. ``timeout`` is the
        Router's default (``router_settings`` may override it) and each direct route's, unless
        the deployment sets its own — the precedence the Router applies."""
        litellm = import_litellm()
        settings = {
            **({"timeout": timeout} if timeout is not None else {}),
            **(router_settings or {}),
        }
        router = litellm.Router(model_list=[dict(e) for e in model_list], **settings)
        direct = direct_routes(model_list, router_settings)
        if timeout is not None:
            direct = {name: {"timeout": timeout, **params} for name, params in direct.items()}
        return cls(router=router, direct=direct)

    def _call(self, kwargs: dict[str, Any]) -> Any:
        """The LiteLLM coroutine for one call (not awaited)."""
        route = self._routes.get(str(kwargs.get("model"))) if self._routes else None
        if route is not None:
            # The Router's precedence: the request's arguments over the deployment's defaults
            # (timeout) over the client's; where to send it and with which credentials, the
            # deployment decides.
            defaults, routing = route
            return import_litellm().acompletion(**{**defaults, **kwargs, **routing})
        target = self.router if self.router is not None else import_litellm()
        return target.acompletion(**{**self.defaults, **kwargs})

    async def acompletion(self, **kwargs: Any) -> ModelResponse:
        model = str(kwargs.get("model"))
        try:
            response = await self._call(kwargs)
        except UpstreamError:
            raise
        except Exception as exc:
            raise _counted(upstream_error(exc, model)) from exc
        return response

    async def astream(self, **kwargs: Any) -> AsyncIterator[ModelResponseStream]:
        model = str(kwargs.get("model"))
        try:
            stream = await self._call({**kwargs, "stream": True})
        except Exception as exc:
            raise _counted(upstream_error(exc, model)) from exc
        try:
            async for chunk in stream:
                yield chunk
        except Exception as exc:
            raise _counted(upstream_error(exc, model)) from exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
