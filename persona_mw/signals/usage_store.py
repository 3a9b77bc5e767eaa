"""Where usage lives: in this process (the embedded default) or in Redis. Both keep each user's
**rollup** — the fold of :class:`~persona_mw.signals.compute.UsageDigest` as per-local-day totals
plus a small live record — so reading a user's signals costs O(days), not O(events).

Both stores keep the same contract (one test suite runs against both):

- ``append(events)`` writes a batch in at most one round trip (Redis: one non-transactional
  pipeline of one ``EVALSHA`` per user plus the user list; on a Cluster, one per node, sent in
  parallel by redis-py's cluster pipeline). The script is loaded only when the server says it
  does not know it (after a start or restart), then the batch is sent again. Writing the same
  event twice stores it once and folds it once: an event's identity is its encoded form (time
  to the microsecond, role, request id and every other field), and only an event the raw set
  did not hold yet (``ZADD NX``) reaches the fold, so a batch retried after a timeout that did
  reach the server does not double-count.
- ``rollup(user_id)`` returns the user's :class:`UsageRollup` (one round trip, one Lua read):
  :meth:`UsageRollup.digest` gives the same :class:`~persona_mw.signals.compute.UsageDigest`
  as folding the user's raw events in time order.
- ``events(user_id, since)`` returns the user's raw events in time order, never older than the
  retention window (for the user's own export; the signals and reports read the rollup).
- ``users()`` returns the raw ids of users with usage inside the retention window.
- ``erase(user_id)`` removes every key of the user's usage (raw events and rollup) and returns
  what went (:class:`ErasedUsage`, counted in the same atomic step that deletes).

**The reorder window.** The recorder writes a request's events when the request ends, so one
user's concurrent requests reach the store out of time order (a request started first may end
last). The fold needs time order (active time is credited between consecutive messages;
sessions end after an idle gap), so a new event waits in the user's *pending* set until it is
``reorder_window_s`` older than the newest event seen, or until more than
``reorder_max_events`` wait; then the oldest are folded, in order. Readers fold the pending ones
on top of the stored totals, so nothing is invisible while it waits. An event that arrives after
a later one was already folded (beyond the window) is counted — messages, cues, late night, its
session if it is the open one — but credits no active time, exactly like
``UsageDigest.add(late=True)``. Within the window the rollup equals the fold of the raw events
(property test: ``tests/signals/test_rollup.py``).

**Sessions are not stored as events.** A session is a function of the timestamps (it ends after
an idle gap, 30 minutes by default), so the fold derives it, for live traffic and offline files
alike. The rollup depends on the :class:`~persona_mw.signals.config.SignalsConfig` measures
(idle gap, active-time cap and tail, late-night hours, relationship threshold): a change of those
applies to usage written after it.

The stores: :class:`~persona_mw.signals.usage_memory.MemoryUsageStore` and
:class:`~persona_mw.signals.usage_redis.RedisUsageStore` (its Redis layout and Lua there); what
they share, the rollup and the one encoding of an event, is in
:mod:`persona_mw.signals.usage_rollup`. Every name stays importable from here.
"""

from __future__ import annotations

from persona_mw.errors import ConfigError
from persona_mw.stores.keys import DEFAULT_PREFIX
from persona_mw.types import UsageStore

from .config import SignalsConfig
from .usage_memory import MemoryUsageStore
from .usage_redis import RedisUsageStore
from .usage_rollup import (
    DEFAULT_REORDER_MAX_EVENTS,
    DEFAULT_REORDER_WINDOW_S,
    DEFAULT_RETENTION_DAYS,
    UsageRollup,
)

__all__ = [
    "DEFAULT_REORDER_MAX_EVENTS",
    "DEFAULT_REORDER_WINDOW_S",
    "DEFAULT_RETENTION_DAYS",
    "MemoryUsageStore",
    "RedisUsageStore",
    "UsageRollup",
    "UsageStore",
    "open_usage_store",
]


def open_usage_store(
    url: str | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    retention_days: float | None = DEFAULT_RETENTION_DAYS,
    signals: SignalsConfig | None = None,
) -> MemoryUsageStore | RedisUsageStore:
    """A usage store for ``url``: ``redis://``, ``rediss://``, ``unix://`` -> Redis; empty ->
    in memory (the same rule as :func:`persona_mw.stores.open_store`)."""
    if not url:
        return MemoryUsageStore(retention_days=retention_days, signals=signals)
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisUsageStore(url, prefix=prefix, retention_days=retention_days, signals=signals)
    raise ConfigError(
        f"unsupported usage store URL {url!r}; use redis://host:port/db or leave it empty for "
        "the embedded in-memory store",
        field="usage.url",
    )
