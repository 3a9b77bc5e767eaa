"""An in-process read cache in front of a store that announces changes.

A hit costs a dict lookup and no network round trip. Freshness comes from the store's
invalidation feed (Redis pub/sub): a write in any process evicts the entry here within
milliseconds. While the feed is down every entry counts as stale, so reads go to the store; when
the store is down too, the stale entry is still returned (as ``"fallback"``) rather than nothing.
``ttl`` bounds staleness should a message ever be lost; when the feed reconnects the cache starts
empty, since messages may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from ..errors import StoreError
from ..observability import get_logger
from ..profile import Profile
from ..types import Lookup, ProfileStore, SupportsInvalidation
from .keys import user_tag
from .loops import cancel_when_it_runs, run_on, task_loop_elsewhere

__all__ = ["CachedProfileStore", "Lookup", "SupportsInvalidation"]

_log = get_logger("persona_mw.cache")


@dataclass(slots=True)
class _Entry:
    profile: Profile | None
    fetched_at: float


class CachedProfileStore:
    """Wraps a store; ``lookup`` is the cached read. Writes go through and evict locally at once."""

    remote = False  # a cache is what stands in front of a remote store

    def __init__(
        self,
        inner: ProfileStore,
        *,
        ttl: float = 60.0,
        max_entries: int = 10_000,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self.max_entries = max_entries
        self.reconnect_delay = reconnect_delay
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tags: dict[str, str] = {}  # tag -> user id, to evict by the tag in a message
        self._listener: asyncio.Task[None] | None = None
        self._feed_up = asyncio.Event()
        self._can_invalidate = isinstance(inner, SupportsInvalidation)
        self._closing = False

    @property
    def feed_up(self) -> bool:
        """The invalidation feed is connected; profiles are cached only while it is."""
        return self._feed_up.is_set()

    @property
    def listener(self) -> asyncio.Task[None] | None:
        """The task that listens for invalidations (None before the first lookup)."""
        return self._listener

    async def start(self) -> None:
        """Start listening for invalidations (called lazily by the first lookup)."""
        if self._can_invalidate and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="persona_mw.cache.invalidations"
            )

    async def lookup(self, user_id: str) -> Lookup:
        if self._listener is None or self._listener_stranded():
            self._forget_feed()
            await self.start()
        entry = self._entries.get(user_id)
        now = time.monotonic()
        if entry is not None and self._feed_up.is_set() and now - entry.fetched_at < self.ttl:
            self._entries.move_to_end(user_id)
            return Lookup(entry.profile, "cache")
        try:
            profile = await self.inner.get(user_id)
        except StoreError:
            if entry is not None:
                return Lookup(entry.profile, "fallback")
            raise
        if self._feed_up.is_set():  # cache only what the feed can later invalidate
            self._remember(user_id, profile, now)
        return Lookup(profile, "store")

    async def get(self, user_id: str) -> Profile | None:
        return (await self.lookup(user_id)).profile

    async def ping(self) -> bool | None:
        return await self.inner.ping()

    async def put(self, profile: Profile, *, expected_version: int | None = None) -> Profile:
        try:
            return await self.inner.put(profile, expected_version=expected_version)
        finally:
            self.evict(profile.user_id)

    async def delete(self, user_id: str, *, keep: Collection[str] = ()) -> bool:
        try:
            return await self.inner.delete(user_id, keep=keep)
        finally:
            self.evict(user_id)

    def _listener_stranded(self) -> bool:
        """The listener's loop has stopped (the sync bridge's loop went away, say): no
        invalidation reaches us any more, so what is cached can no longer be trusted."""
        task = self._listener
        if task is None:
            return False
        loop = task.get_loop()
        return loop is not asyncio.get_running_loop() and not loop.is_running()

    def _forget_feed(self) -> None:
        """Drop the listener and everything cached under it; the next one starts afresh here."""
        old, self._listener = self._listener, None
        self._feed_up.clear()
        self._entries.clear()
        self._tags.clear()
        if old is not None:
            cancel_when_it_runs(old)

    def evict(self, user_id: str) -> None:
        self._entries.pop(user_id, None)

    def _remember(self, user_id: str, profile: Profile | None, now: float) -> None:
        self._entries[user_id] = _Entry(profile, now)
        self._entries.move_to_end(user_id)
        self._tags[user_tag(user_id)] = user_id
        while len(self._entries) > self.max_entries:
            old, _ = self._entries.popitem(last=False)
            self._tags.pop(user_tag(old), None)

    async def _listen(self) -> None:
        assert isinstance(self.inner, SupportsInvalidation)  # checked in __init__
        # redis-py may turn our cancellation into a connection error, so closing is also a flag.
        while not self._closing:
            try:
                async for tag in self.inner.invalidations():
                    if not tag:
                        # Subscribed: from now on no change can slip past us. Whatever we kept
                        # while the feed was down may have missed messages: forget it.
                        self._entries.clear()
                        self._tags.clear()
                        self._feed_up.set()
                        continue
                    user_id = self._tags.get(tag)
                    if user_id is not None:
                        self._entries.pop(user_id, None)
            except StoreError as exc:
                if self._closing:
                    return
                _log.warning("profile_cache.feed_lost", error=str(exc))
            # Until the feed is back every entry counts as stale; they stay for fallback.
            self._feed_up.clear()
            await asyncio.sleep(self.reconnect_delay)

    async def aclose(self) -> None:
        """Stop the listener and close the store. From any loop: the listener belongs to the
        loop it started on, so the close runs there while that loop runs (in another thread);
        once it has stopped, the listener is left to be cancelled should it ever run again."""
        loop = task_loop_elsewhere(self._listener)
        if loop is not None:
            # The listener belongs to that loop (a sync app's calls ran there): close there.
            await run_on(loop, self.aclose)
            return
        self._closing = True
        listener, self._listener = self._listener, None
        if listener is not None and listener.get_loop() is not asyncio.get_running_loop():
            cancel_when_it_runs(listener)  # its loop has stopped: nothing there can be awaited
            listener = None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener], timeout=0.2)
        # Closing the store also cuts a feed connection whose cancellation got lost.
        await self.inner.aclose()
        if listener is not None and not listener.done():
            await asyncio.wait([listener], timeout=2.0)
        if listener is not None and listener.done() and not listener.cancelled():
            listener.exception()  # retrieved: a StoreError from the cut connection is expected
        self._feed_up.clear()
