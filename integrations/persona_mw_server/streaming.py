"""Streaming a middleware answer to an HTTP client that may go away at any moment.

The middleware's stream runs in a task of its own (a :class:`Pump`) and hands chunks over a
small queue. Why not iterate it in the response directly: when a client disconnects, starlette
cancels the response through an anyio cancel scope, which cancels *every* await in the
generator's ``finally`` too, so the middleware could not record the call's usage. A plain task
cancel is delivered once, so the middleware's ``finally`` (close the upstream, run the finish
stages) runs to the end. Open pumps are tracked so shutdown can wait for them.

A consumer that has all it needs (the answer's last chunk) may :meth:`Pump.detach`: the source
then runs to its end on its own (LiteLLM's end-of-stream bookkeeping, the middleware's finish
stages) while the HTTP response is already complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

__all__ = ["END", "Pump"]

T = TypeVar("T")


class _End:
    def __repr__(self) -> str:
        return "END"


#: What :meth:`Pump.get` returns once the stream is over.
END = _End()


class Pump(Generic[T]):
    """Iterates ``source`` in its own task. ``get`` returns the next item or :data:`END`, and
    re-raises what the source raised. ``cancel`` stops it (the source's ``finally`` still runs)."""

    def __init__(
        self, source: AsyncIterator[T], *, tracked: set[asyncio.Task[None]], buffer: int = 8
    ) -> None:
        self._queue: asyncio.Queue[T | _End | BaseException] = asyncio.Queue(maxsize=buffer)
        self._detached = False
        self.task = asyncio.get_running_loop().create_task(
            self._run(source), name="persona_mw_server.stream"
        )
        tracked.add(self.task)
        self.task.add_done_callback(tracked.discard)

    async def _run(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                if not self._detached:
                    await self._queue.put(item)
        except Exception as exc:  # handed to the consumer, which turns it into an error answer
            if not self._detached:  # else the middleware has logged it; no one is listening
                await self._queue.put(exc)
            return
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        if not self._detached:
            await self._queue.put(END)

    async def get(self) -> T | _End:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def detach(self) -> None:
        """Stop listening: the source runs on to its end, its further items are dropped."""
        self._detached = True
        while not self._queue.empty():  # unblock a put waiting for room
            self._queue.get_nowait()

    def cancel(self) -> None:
        if not self.task.done():
            self.task.cancel()
