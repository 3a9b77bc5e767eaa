"""Run persona_mw's async pieces from sync LangChain code (``invoke``, ``stream``, sync handlers).

All sync calls share one private event loop in a daemon thread. One loop, not a fresh
``asyncio.run`` per call, because the middleware's parts outlive a call and some of them are
bound to the loop they first ran on (redis-py's asyncio connections, the profile cache's
invalidation listener). It also works when the calling thread already runs an event loop
(sync code called from a coroutine, a Jupyter cell): the coroutine runs on the private loop and
the caller's thread waits for it. The same goes for closing a middleware used here: the
wrappers' ``close()`` runs its ``aclose()`` on this loop.

Every behaviour of the integration is written once, async; a sync entry point is an adapter
that drives it here: :func:`run_sync` for one result, :func:`iterate_sync` for a stream (each
item handed over as soon as it is made, so a sync ``stream`` stays incremental). What the async
code must do with a blocking API (a sync call's inner model) it does in a worker thread:
:func:`in_thread`, :func:`iterate_in_thread`.

Not anyio's ``BlockingPortal`` (weighed for issue 18): its ``call`` crosses to the loop twice,
once to start the task in the portal's task group and once for the result, which measured twice
the cost of a :func:`run_sync` (39 vs 76 µs at best) and of a sync stream's chunk (147 vs
233 µs at best; 258 vs 410 µs median) on the shared 2-core machine. And
``start_blocking_portal`` must be left to stop its loop: leaving it waits for the calls still
running, and one never left hangs the interpreter's exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar, cast

__all__ = ["in_thread", "iterate_in_thread", "iterate_sync", "run_sync"]

T = TypeVar("T")

#: The end of a stream, where ``None`` could be an item.
_END: Any = object()

#: The worker threads: one per sync call whose model call is running, as when that call ran in
#: the caller's own thread (up to 256, started when needed). Not the loop's default few: that
#: would queue one app thread's model call behind another's, and wrappers nested in each other
#: could wait on each other for ever. (anyio's uncapped ``to_thread`` measured 2 to 2.6 times
#: as slow per streamed chunk on this loop.)
_workers = ThreadPoolExecutor(max_workers=256, thread_name_prefix="persona-mw-langchain-model")

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


def iterate_sync(stream: AsyncGenerator[T, None]) -> Iterator[T]:
    """Each item of ``stream`` as soon as it is made, the generator running on the loop
    :func:`run_sync` uses. Closing this iterator (a consumer that stops early) closes ``stream``
    there, so its ``finally`` runs as in an async consumer."""
    try:
        while (item := run_sync(_next(stream))) is not _END:
            yield item
    finally:
        run_sync(stream.aclose())


async def _next(stream: AsyncGenerator[T, None]) -> T:
    return cast(T, await anext(stream, _END))


async def in_thread(call: Callable[[], T]) -> T:
    """``call()``, a blocking call, in a worker thread; the caller's context variables go along."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _workers, partial(contextvars.copy_context().run, _stop_as_error, call)
    )


def _stop_as_error(call: Callable[[], T]) -> T:
    """A StopIteration cannot travel in an asyncio future (the await would never end), so it
    leaves as a RuntimeError, as from LangChain's own ``run_in_executor``."""
    try:
        return call()
    except StopIteration as exc:
        raise RuntimeError("the model call raised StopIteration") from exc


async def iterate_in_thread(start: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """A blocking iterator as an async one: made, advanced and closed in worker threads."""
    items = await in_thread(start)
    try:
        while (item := await in_thread(lambda: next(items, _END))) is not _END:
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            await in_thread(close)
