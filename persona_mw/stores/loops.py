"""Redis stores and the event loop their connections belong to.

A ``redis.asyncio`` connection works only on the loop it was made on. A sync app's calls through
LangChain run on a private loop in another thread, while the app closes the middleware (or erases
a user) from its own loop. So each Redis store remembers the loop it last ran on, its *home*:

- a call from another loop while home still runs (in another thread) is handed to home and
  awaited there, without blocking the caller's loop (:func:`on_home_loop`);
- when home has stopped, nothing can run there any more: the running loop becomes home, and a
  store that made its client itself starts a new one here (the old loop's connections stay with
  that loop, which alone could close them). A client passed in by the caller is theirs: it is
  never replaced.

A home loop that runs but takes nothing (its thread is blocked: typically waiting for this very
call, a sync call made from async code) would make the hand-over wait forever; after
:data:`START_TIMEOUT_S` it is given up with a :class:`~persona_mw.errors.StoreError` that says so.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import redis.asyncio as aioredis

from ..errors import StoreError

__all__ = [
    "START_TIMEOUT_S",
    "HomeLoop",
    "cancel_when_it_runs",
    "connector",
    "on_home_loop",
    "run_on",
    "task_loop_elsewhere",
]

#: How long a running home loop may take to start a handed-over call before it counts as blocked.
START_TIMEOUT_S = 5.0

_P = ParamSpec("_P")
_T = TypeVar("_T")


def connector(url: str, socket_timeout: float = 2.0) -> Callable[[], aioredis.Redis]:
    """How a store makes its own ``redis.asyncio`` client from ``url`` — again on a new home
    loop when the old one has stopped. The timeout bounds connecting and each command."""
    return functools.partial(
        aioredis.Redis.from_url,
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
    )


def task_loop_elsewhere(task: asyncio.Task[Any] | None) -> asyncio.AbstractEventLoop | None:
    """The loop of a live ``task`` if it is not the running one and still runs (so, in another
    thread): work on what the task holds must be handed there. None otherwise."""
    if task is None or task.done():
        return None
    loop = task.get_loop()
    if loop is asyncio.get_running_loop() or not loop.is_running():
        return None
    return loop


def cancel_when_it_runs(task: asyncio.Task[Any]) -> None:
    """Cancel a task whose loop has stopped, should that loop ever run again (nothing can await
    it from another loop; a closed loop never runs again, and its connections went with it)."""
    loop = task.get_loop()
    if not task.done() and not loop.is_closed():
        loop.call_soon_threadsafe(task.cancel)


class HomeLoop:
    """The loop a store's connections belong to. ``moved`` is called when home changes because
    the old one stopped (to leave behind what was bound to it)."""

    __slots__ = ("_lock", "_loop", "_moved")

    def __init__(self, moved: Callable[[], None] | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._moved = moved
        self._lock = threading.Lock()  # two loops in two threads may ask at the same moment

    def elsewhere(self) -> asyncio.AbstractEventLoop | None:
        """Home, if it is not the running loop and still runs: the caller's work belongs there.
        Otherwise None, and the running loop is home from now on. Never awaits, so two callers
        on one loop cannot interleave here; a lock keeps two loops from both claiming home."""
        running = asyncio.get_running_loop()
        home = self._loop
        if home is running:
            return None
        with self._lock:
            home = self._loop
            if home is running:
                return None
            if home is not None and home.is_running():
                return home
            if home is not None and self._moved is not None:
                self._moved()
            self._loop = running
            return None


class _Homed(Protocol):
    _home: HomeLoop


_S = TypeVar("_S", bound=_Homed)


def on_home_loop(
    method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
    """Run a store method on the store's home loop (see the module docstring)."""

    @functools.wraps(method)
    async def run(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        home = self._home.elsewhere()
        if home is not None:
            return await run_on(home, functools.partial(method, self, *args, **kwargs))
        return await method(self, *args, **kwargs)

    return run


async def run_on(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Coroutine[Any, Any, _T]]
) -> _T:
    """Run ``call()`` on ``loop`` (running in another thread) and wait for it without blocking
    the running loop; cancelling the wait cancels it there too. StoreError if ``loop`` does not
    start it within :data:`START_TIMEOUT_S` (the coroutine is made there, so one never started
    is never created)."""
    lock = threading.Lock()
    phase = ["waiting"]  # -> "started" (there) or "abandoned" (here), whichever comes first

    async def there() -> _T:
        with lock:
            if phase[0] == "abandoned":
                raise asyncio.CancelledError  # given up on before it began: never run it
            phase[0] = "started"
        return await call()

    done = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(there(), loop))
    try:
        await asyncio.wait({done}, timeout=START_TIMEOUT_S)
    except asyncio.CancelledError:
        done.cancel()
        raise
    if not done.done():
        with lock:
            abandon = phase[0] == "waiting"
            if abandon:
                phase[0] = "abandoned"
        if abandon:
            done.cancel()
            raise StoreError(
                "the event loop this store's Redis connections belong to runs in another thread "
                f"but took no work for {START_TIMEOUT_S:g} s: its thread is blocked, most likely "
                "waiting for this very call (a sync call such as PersonaChatModel.invoke() or "
                "close() made from async code). From async code use the async API (ainvoke, "
                "astream, aclose)"
            )
    return await done
