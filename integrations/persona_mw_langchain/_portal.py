"""Run persona_mw's async pieces from sync LangChain code (``invoke``, ``stream``, sync handlers).

All sync calls share one private event loop in a daemon thread. One loop, not a fresh
``asyncio.run`` per call, because the middleware's parts outlive a call and some of them are
bound to the loop they first ran on (redis-py's asyncio connections, the profile cache's
invalidation listener). It also works when the calling thread already runs an event loop
(sync code called from a coroutine, a Jupyter cell): the coroutine runs on the private loop and
the caller's thread waits for it. The same goes for closing a middleware used here: the
wrappers' ``close()`` runs its ``aclose()`` on this loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _portal_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="persona-mw-langchain-sync", daemon=True
            )
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the loop the integration's sync calls use, and return its result (or
    raise its exception).

    For sync code that also calls the middleware's coroutines, e.g.
    ``run_sync(mw.store.put(profile))`` before the first ``invoke``: parts such as a Redis
    store's connections belong to the loop they first ran on, so they must run on this one.
    Not from inside a coroutine that this loop runs (a stage): that would wait on itself.
    """
    loop = _portal_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError(
            "persona_mw_langchain: a sync LangChain call was made from inside persona_mw's own "
            "sync-bridge loop (from a stage?); call the async API (ainvoke/astream) there instead"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
