"""The usage recorder: a finish stage that records each request off the request's critical path.

Why one module over 400 lines: the buffer, the writer task and the books are one state machine
(``produced == stored + dropped + pending`` holds because one object owns all three), and a
good part of its length is its policy, written out below.

Per request it makes two :class:`~persona_mw.types.UsageEvent`\\ s — the user's message
(at ``ctx.started_at``) and the assistant's reply (at completion;
:mod:`persona_mw.signals.call_usage` makes them) — and appends them to a bounded in-process
buffer. That is all the request waits for (a few microseconds). A background task,
started lazily in the running event loop on first use, drains the buffer in batches into a
:class:`~persona_mw.signals.usage_store.UsageStore`, one pipelined round trip per batch.

**Back-pressure: drop the newest, count it, log it.** When the buffer is full (the store is down
or slower than traffic for long enough), the events that do not fit are dropped at once rather
than making requests wait: usage recording is care, not a gate, and a request must never slow down
because Redis did. Every drop is counted (:attr:`UsageRecorder.dropped`) and reported as a
``usage.dropped`` warning carrying the count (at most one per second while drops continue, and
a final one on close), so loss is never silent. Older buffered events are kept: they are already
in order and a retry writes them as soon as the store is back.

**Failures are retried.** A batch the store could not write (:class:`~persona_mw.errors.StoreError`)
stays buffered and is retried with exponential backoff (``retry_initial_s`` doubling to
``retry_max_s``); a write that reached the server before the error is harmless to repeat, because
stores keep an event once. Any other error is a bug in the batch itself: the batch is dropped and
counted (``usage.dropped`` with ``reason="write_error"``) so one bad event cannot wedge the queue.

**Books balance**: ``produced == stored + dropped + pending`` at every await point.

**Graceful stop loses nothing**: :meth:`UsageRecorder.flush` waits until everything buffered is
written; :meth:`UsageRecorder.aclose` (called by ``Middleware.aclose``) flushes, stops the task and
closes the store. Events still unwritten when its timeout ends are reported (``usage.unflushed``).

**Any loop may flush or close.** The writer task belongs to the loop it started in, and so do a
Redis store's connections. When that loop still runs in another thread (LangChain's sync bridge
runs the sync calls on a private loop), :meth:`~UsageRecorder.flush` and
:meth:`~UsageRecorder.aclose` (and :meth:`~UsageRecorder.erase`) hand themselves to it and wait
without blocking the caller's loop; when it has stopped, the buffer (plain memory) is written from
the caller's loop instead (a Redis store then reconnects there, see
:mod:`persona_mw.stores.loops`).

**Logs**: one ``usage.recorded`` event at *debug* level per event *written* (after the store
accepted it; debug because it is one event per message, on the event loop: the counters in
:mod:`persona_mw.observability` are the operator's view of the books), with
stable keys ``user_hash`` (the pipeline's HMAC, never the raw id), ``request_id``, ``role``,
``ts``, ``tokens``, ``chars``, ``analysed``, ``cues``, ``relationship_score``, ``exposure`` and
``minor``. No text, no raw user id, no session id: sessions are derived from timestamps by the
fold the store's rollup keeps (:class:`~persona_mw.signals.compute.UsageDigest`, see
:mod:`persona_mw.signals.usage_store`).

**Text analysis** (cue flags, relationship-seeking score) runs only when the user consented
(``profile.consent.text_analysis``) and an ``analyse`` callable was given, and it runs in the
background task, not in the request; the text waits in the buffer and is never stored. A user
message the dependence stage already analysed (``ctx.user_cues``) keeps those flags instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from persona_mw.errors import ConfigError, StoreError
from persona_mw.observability import get_logger
from persona_mw.stores.loops import cancel_when_it_runs, run_on, task_loop_elsewhere
from persona_mw.types import CallContext

from .call_usage import PendingEvent, call_events
from .usage_store import UsageStore

__all__ = ["UsageRecorder"]

_log = get_logger("persona_mw.signals")

#: ``analyse(text, role) -> (cue flags, relationship-seeking score or None)`` (the signals'
#: :data:`persona_mw.signals.cues.Analyse`; repeated here so this module does not import cues).
_Analyse = Callable[[str, Literal["user", "assistant"]], tuple[frozenset[str], float | None]]

_DROP_LOG_INTERVAL_S = 1.0
_ANALYSE_SLICE = 32


class UsageRecorder:
    """Finish stage ``"usage"``: records each request's two usage events through a bounded
    background queue (policy in the module docstring).

    ``store`` is any :class:`~persona_mw.signals.usage_store.UsageStore` (the recorder closes it
    in :meth:`aclose`). ``analyse`` is the cue detector, e.g.
    :func:`persona_mw.signals.analyse_text`; without it no text is analysed. ``queue_size``
    bounds the events held in memory (buffered plus in flight); ``batch_size`` caps one write
    (at most ``queue_size``); the writer waits up to ``linger_s`` for a batch to fill before
    writing a partial one (not while someone waits in :meth:`flush`).

    Holds only long-lived parts: the buffer, the counters and the writer task; nothing per call.
    """

    name = "usage"

    def __init__(
        self,
        store: UsageStore[object],
        *,
        analyse: _Analyse | None = None,
        queue_size: int = 10_000,
        batch_size: int = 500,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        linger_s: float = 0.02,
    ) -> None:
        if queue_size < 2:
            raise ConfigError(
                f"queue_size must be at least 2 (one request's events), not {queue_size}",
                field="queue_size",
            )
        if batch_size < 1:
            raise ConfigError(
                f"batch_size must be at least 1, not {batch_size}", field="batch_size"
            )
        if not 0 < retry_initial_s <= retry_max_s:
            raise ConfigError(
                "retry delays must satisfy 0 < retry_initial_s <= retry_max_s "
                f"(got {retry_initial_s} and {retry_max_s})",
                field="retry_initial_s",
            )
        self.store = store
        self.analyse = analyse
        self.queue_size = queue_size
        self.batch_size = min(batch_size, queue_size)
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.linger_s = max(0.0, linger_s)
        #: Events handed to the recorder / written by the store / dropped (never silently).
        self.produced = 0
        self.stored = 0
        self.dropped = 0
        #: Batches written, and batches the store failed to write (each retried).
        self.writes = 0
        self.write_failures = 0
        self._buffer: deque[PendingEvent] = deque()
        self._inflight: list[PendingEvent] = []
        self._unlogged_drops = 0
        self._last_drop_log = 0.0
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._flushing = 0

    @property
    def pending(self) -> int:
        """Events held in memory: buffered plus the batch being written."""
        return len(self._buffer) + len(self._inflight)

    # -- the stage ----------------------------------------------------------------------------

    async def __call__(self, ctx: CallContext) -> None:
        self._submit(call_events(ctx, analyse=self.analyse is not None))

    def _submit(self, items: list[PendingEvent]) -> None:
        """Buffer events for the writer; drop (and count) what does not fit. Never waits."""
        self.produced += len(items)
        if self._closed:
            self._drop(len(items), "closed")
            return
        room = self.queue_size - self.pending
        self._buffer.extend(items[: max(room, 0)])
        if len(items) > room:
            self._drop(len(items) - max(room, 0), "queue_full")
        owner = self._writer_loop_elsewhere()
        if owner is not None:
            # The writer runs on a loop in another thread (a sync bridge beside the app's own
            # loop): wake it there rather than start a second writer on the same buffer.
            owner.call_soon_threadsafe(self._wake_writer)
            return
        self._ensure_writer()
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Tell the writer (on its own loop) that events wait."""
        assert self._wake is not None and self._idle is not None and self._full is not None
        if self.pending:
            self._idle.clear()
        if len(self._buffer) >= self.batch_size:
            self._full.set()
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every buffered event is written; False if ``timeout_s`` ran out first
        (the events stay buffered, and the writer keeps retrying)."""
        owner = self._writer_loop_elsewhere()
        if owner is not None:
            return await run_on(owner, lambda: self.flush(timeout_s))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._flushing += 1  # the writer stops lingering while anyone waits here
        try:
            while self.pending:
                self._ensure_writer()
                assert self._wake and self._idle and self._full
                self._idle.clear()
                self._full.set()
                self._wake.set()
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(self._idle.wait(), left)
                except TimeoutError:
                    return False
            return True
        finally:
            self._flushing -= 1

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Flush (for up to ``timeout_s``), stop the writer and close the store. Later calls
        drop their events (counted). Events that could not be written are reported."""
        if self._closed:
            return
        owner = self._writer_loop_elsewhere()
        if owner is not None:
            # The whole close runs there: the writer is awaited, and the store closed, on the
            # loop its connections belong to.
            await run_on(owner, lambda: self.aclose(timeout_s))
            return
        flushed = await self.flush(timeout_s)
        self._closed = True
        if not flushed:
            _log.error(
                "usage.unflushed",
                pending=self.pending,
                hint="the usage store stayed unreachable during shutdown; these events are lost",
            )
        await self._stop_writer()
        self._log_drops(force=True)
        await self.store.aclose()

    async def erase(self, user_id: str) -> dict[str, int]:
        """Erase the user's usage (``Middleware.erase_user``): write what is buffered first, so
        an event still in the queue cannot bring their data back after the erasure. Runs on the
        writer's loop, like :meth:`flush`: the store's connections belong there. Returns what
        the store really deleted: raw events and local days of rollup."""
        owner = self._writer_loop_elsewhere()
        if owner is not None:
            return await run_on(owner, lambda: self.erase(user_id))
        await self.flush(timeout_s=10.0)
        erased = await self.store.erase(user_id)
        return {"events": erased.events, "rollup_days": erased.days}

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The background writer task, on the event loop it started on; None before the first
        event and after :meth:`aclose`. For health checks and tests: read it, do not cancel it
        (:meth:`aclose` stops it after writing what is buffered)."""
        return self._task

    # -- the writer ---------------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        """Start the writer in the running loop (again, if the loop it ran in has gone: the
        buffer is plain memory and survives; the task and its events are per loop)."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done():
            if task.get_loop() is loop:
                return
            if not task.get_loop().is_running():
                cancel_when_it_runs(task)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._full = asyncio.Event()
        self._buffer.extendleft(reversed(self._inflight))  # a batch a dead loop never finished
        self._inflight = []
        self._task = loop.create_task(self._write_loop(), name="persona_mw.usage_recorder")

    def _writer_loop_elsewhere(self) -> asyncio.AbstractEventLoop | None:
        """The writer's loop, if it runs in another thread. A task can only be awaited from its
        own loop; one that has stopped runs nothing, so there :meth:`_ensure_writer` starts a new
        writer here instead."""
        return task_loop_elsewhere(self._task)

    async def _stop_writer(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            cancel_when_it_runs(task)  # its loop has stopped (aclose hands a live one the close)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._buffer.extendleft(reversed(self._inflight))
        self._inflight = []

    async def _write_loop(self) -> None:
        wake, idle, full = self._wake, self._idle, self._full
        assert wake is not None and idle is not None and full is not None
        delay = self.retry_initial_s
        while True:
            if not self._inflight:
                if not self._buffer:
                    idle.set()
                    wake.clear()
                    await wake.wait()
                    continue
                idle.clear()
                if len(self._buffer) < self.batch_size and self.linger_s and not self._flushing:
                    # Linger: let a batch gather, so a trickle of requests does not pay the
                    # per-write overhead once per request.
                    # A timer sets ``full`` when the linger is over: wait_for would wrap the
                    # wait in a task, once per batch.
                    full.clear()
                    timer = asyncio.get_running_loop().call_later(self.linger_s, full.set)
                    try:
                        await full.wait()
                    finally:
                        timer.cancel()
                await self._take_batch()
            batch = self._inflight
            try:
                await self.store.append([p.event for p in batch])
            except StoreError as exc:
                self.write_failures += 1
                _log.warning(
                    "usage.write_failed",
                    events=len(batch),
                    pending=self.pending,
                    retry_in_s=round(delay, 3),
                    error=str(exc),
                )
                self._log_drops()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            except Exception as exc:  # a bad batch must not wedge the queue
                self._inflight = []
                self._drop(len(batch), "write_error", error=repr(exc))
                continue
            self._inflight = []
            self.writes += 1
            self.stored += len(batch)
            delay = self.retry_initial_s
            if _log.is_enabled_for(logging.DEBUG):  # not even built when nobody reads it
                for item in batch:
                    _log_recorded(item)
            self._log_drops()

    async def _take_batch(self) -> None:
        """Move the next batch from the buffer to in-flight, analysing text on the way; yields
        to the loop now and then so a batch of analyses does not stall concurrent requests."""
        take = min(self.batch_size, len(self._buffer))
        for n in range(take):
            self._inflight.append(self._analysed(self._buffer.popleft()))
            if self.analyse is not None and n % _ANALYSE_SLICE == _ANALYSE_SLICE - 1:
                await asyncio.sleep(0)

    def _analysed(self, item: PendingEvent) -> PendingEvent:
        if item.text is None or self.analyse is None:
            return item
        event = item.event
        try:
            cues, score = self.analyse(item.text, event.role) if item.text else (frozenset(), None)
        except Exception as exc:  # a detector bug loses the flags, not the event
            _log.warning("usage.analyse_failed", user_hash=item.user_hash, error=repr(exc))
            return PendingEvent(replace(event, analysed=False), item.user_hash, None)
        return PendingEvent(
            replace(event, cues=frozenset(cues), relationship_score=score), item.user_hash, None
        )

    def _drop(self, count: int, reason: str, **extra: str) -> None:
        self.dropped += count
        self._unlogged_drops += count
        if reason != "queue_full":  # rare: say so at once, with the reason
            _log.warning(
                "usage.dropped", count=count, dropped_total=self.dropped, reason=reason, **extra
            )
            self._unlogged_drops -= count
            return
        self._log_drops()

    def _log_drops(self, *, force: bool = False) -> None:
        """One ``usage.dropped`` per second at most while the queue overflows, so an outage
        does not also flood the logs; ``force`` reports the remainder (on close)."""
        now = time.monotonic()
        if not self._unlogged_drops:
            return
        if not force and now - self._last_drop_log < _DROP_LOG_INTERVAL_S:
            return
        _log.warning(
            "usage.dropped",
            count=self._unlogged_drops,
            dropped_total=self.dropped,
            reason="queue_full",
            queue_size=self.queue_size,
        )
        self._unlogged_drops = 0
        self._last_drop_log = now


def _log_recorded(item: PendingEvent) -> None:
    event = item.event
    _log.debug(
        "usage.recorded",
        user_hash=item.user_hash,
        request_id=event.request_id,
        role=event.role,
        ts=event.ts.isoformat(),
        tokens=event.tokens,
        chars=event.chars,
        analysed=event.analysed,
        cues=sorted(event.cues),
        relationship_score=event.relationship_score,
        exposure=sorted(event.exposure),
        minor=event.minor,
    )
