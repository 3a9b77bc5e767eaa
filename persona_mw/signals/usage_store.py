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

Redis layout (keys from :mod:`persona_mw.stores.keys`; all of one user's keys share the hash tag
``{u:<digest>}``, so they sit in one Redis Cluster slot and one script may touch them all)::

    {prefix}{u:<digest>}:usage:events    sorted set: member = one event as compact JSON, score =
                                         2 x epoch microseconds (+1 for a reply, so a message
                                         sorts before its reply at the same instant); trimmed
                                         to the retention window on every write
    {prefix}{u:<digest>}:usage:pending   sorted set, same members and scores: events not folded
                                         yet (the reorder window; at most reorder_max_events)
    {prefix}{u:<digest>}:usage:live      hash: where the fold stands (last folded event: score,
                                         zone, minor, local day; open session: start, days it
                                         counted on; events folded; newest score seen)
    {prefix}{u:<digest>}:usage:d:<day>   hash per local day (YYYY-MM-DD): a active microseconds,
                                         m user messages, s sessions, l late-night messages,
                                         y analysed, c:<cue> cue counts, b replies, x replies
                                         shaped by the profile, k scored, h relationship-seeking
    {prefix}{u:<digest>}:usage:days      sorted set: local day -> last write (epoch ms), so
                                         readers and erasure find the day hashes without a SCAN
    {prefix}{u:<digest>}:usage:id        string: the raw user id (so ``users()`` can answer
                                         with ids)
    {prefix}{u:<digest>}:keys            the user's key index (shared with the profile store),
                                         which lists the keys above but the day hashes
    {prefix}usage:users                  sorted set, deployment-wide: user tag -> time of their
                                         latest event (epoch ms), trimmed to the retention
                                         window. Tags only, never raw ids; its own slot (on a
                                         cluster the batch pipeline reaches it separately)

Every per-user key expires ``retention_days`` after its last write (the app wires
``history_days``), so a user's footprint is bounded; docs/signals.md gives bytes per user-day.

The compact JSON has short keys and omits defaults: ``t`` time (epoch microseconds, UTC), ``r``
role (``u``/``a``), ``z`` zone, ``m`` minor, ``k`` tokens, ``c`` characters, ``q`` cue flags,
``s`` relationship-seeking score, ``x`` exposure, ``i`` request id, ``a`` analysed; and what the
fold needs but Lua cannot work out (no time zones there): ``d`` local day, ``l`` late night,
``h`` relationship-seeking. The user id is the key's; there is never message text.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from redis.exceptions import NoScriptError, RedisError

from persona_mw.errors import ConfigError, StoreError
from persona_mw.stores.keys import DEFAULT_PREFIX, index_key, user_key, user_tag
from persona_mw.stores.loops import HomeLoop, connector, on_home_loop
from persona_mw.types import ErasedUsage, UsageEvent, UsageStore

from .compute import DayTotals, FoldState, Signals, UsageDigest, micros
from .config import SignalsConfig

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

#: How long usage is kept by default. A heuristic: the signals look back 60 days at most
#: (``SignalsConfig.history_days``); 90 leaves room for a report on the last quarter. The app
#: passes ``history_days``.
DEFAULT_RETENTION_DAYS = 90.0
#: The reorder window (module docstring). Heuristic: longer than a long streamed reply, so a
#: request that ends well after a later one still folds in time order.
DEFAULT_REORDER_WINDOW_S = 120.0
#: At most this many events wait unfolded per user: bounds a heavy user's pending set and so the
#: readers' work (a load decodes them) whatever their rate; 50 requests in flight make 100 events.
DEFAULT_REORDER_MAX_EVENTS = 256

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# The fold of UsageDigest.add, in Lua (the two are held equal by tests/signals/test_rollup.py).
# KEYS: events, id, index, live, pending, days. ARGV: now ms, TTL s ('0': none), user id, day
# key prefix, idle us, cap us, tail us, reorder window (score units), max pending, then score,
# member pairs. Numbers go back to Redis through string.format('%.0f'): Lua's tostring keeps 14
# digits and a score has 16.
_APPEND = """
local now_ms, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local dayp = ARGV[4]
local idle, cap, tail = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window, maxp = tonumber(ARGV[8]), tonumber(ARGV[9])
local function num(x) return string.format('%.0f', x) end
local new = {}
for i = 10, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1]) == 1 then
    new[#new + 1] = {tonumber(ARGV[i]), ARGV[i + 1]}
  end
end
if #new == 0 then return 0 end
local st = {}
local raw = redis.call('HGETALL', KEYS[4])
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local ls, lt, ld, lz, lm = tonumber(st.ls), tonumber(st.lt), st.ld, st.lz, st.lm
local ss, n, mx = tonumber(st.ss), tonumber(st.n or '0'), tonumber(st.mx)
local sd = {}
if st.sd then for d in string.gmatch(st.sd, '[^,]+') do sd[d] = true end end
local touched = {}
local function incr(d, f, by)
  redis.call('HINCRBY', dayp .. d, f, by)
  touched[d] = true
end
local function fold(score, e, late)
  if not late then
    if lt == nil or e.t - lt > idle then
      if lt ~= nil then incr(ld, 'a', tail) end
      ss = e.t
      sd = {}
    else
      incr(ld, 'a', math.min(e.t - lt, cap))
    end
  end
  local d = e.d
  if e.r == 'u' then
    incr(d, 'm', 1)
    if (not late or (ss ~= nil and e.t - ss >= -idle)) and not sd[d] then
      sd[d] = true
      incr(d, 's', 1)
    end
    if e.l then incr(d, 'l', 1) end
    if e.a then
      incr(d, 'y', 1)
      for _, c in ipairs(e.q or {}) do incr(d, 'c:' .. c, 1) end
    end
  else
    incr(d, 'b', 1)
    if e.x then incr(d, 'x', 1) end
    if e.s ~= nil then
      incr(d, 'k', 1)
      if e.h then incr(d, 'h', 1) end
    end
  end
  if not late then
    ls, lt, ld, lz, lm = score, e.t, d, e.z or 'UTC', e.m and '1' or '0'
  end
  n = n + 1
end
for _, item in ipairs(new) do
  if ls ~= nil and item[1] < ls then
    fold(item[1], cjson.decode(item[2]), true)
  else
    redis.call('ZADD', KEYS[5], num(item[1]), item[2])
    if mx == nil or item[1] > mx then mx = item[1] end
  end
end
while true do
  local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if #head == 0 then break end
  local score = tonumber(head[2])
  if score > mx - window and redis.call('ZCARD', KEYS[5]) <= maxp then break end
  redis.call('ZREM', KEYS[5], head[1])
  fold(score, cjson.decode(head[1]), false)
end
local days = {}
for d in pairs(touched) do days[#days + 1] = d end
table.sort(days)
local live = {'n', num(n), 'mx', num(mx)}
if ls ~= nil then
  for _, v in ipairs({'ls', num(ls), 'lt', num(lt), 'ld', ld, 'lz', lz, 'lm', lm, 'ss', num(ss)}) do
    live[#live + 1] = v
  end
  local open = {}
  for d in pairs(sd) do open[#open + 1] = d end
  table.sort(open)
  live[#live + 1] = 'sd'
  live[#live + 1] = table.concat(open, ',')
end
redis.call('HSET', KEYS[4], unpack(live))
for _, d in ipairs(days) do redis.call('ZADD', KEYS[6], num(now_ms), d) end
if ttl > 0 then
  local cut = now_ms - ttl * 1000
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. num(cut * 2000))
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. num(cut))
  for _, d in ipairs(days) do redis.call('EXPIRE', dayp .. d, ttl) end
  for _, k in ipairs({KEYS[1], KEYS[4], KEYS[5], KEYS[6]}) do redis.call('EXPIRE', k, ttl) end
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[3], KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6])
return #new
"""
_APPEND_SHA = hashlib.sha1(_APPEND.encode()).hexdigest()

# KEYS: live, pending, days, id. ARGV: day key prefix, cutoff ms ('-inf' without retention).
_READ = """
local days = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[2], '+inf')
local totals = {}
for _, d in ipairs(days) do
  totals[#totals + 1] = d
  totals[#totals + 1] = redis.call('HGETALL', ARGV[1] .. d)
end
return {redis.call('HGETALL', KEYS[1]), redis.call('ZRANGE', KEYS[2], 0, -1), totals}
"""
_READ_SHA = hashlib.sha1(_READ.encode()).hexdigest()

# KEYS: events, id, live, pending, days, index; ARGV: day key prefix. Returns {events, days}.
_ERASE = """
local events = redis.call('ZCARD', KEYS[1])
local days = 0
for _, d in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  days = days + redis.call('DEL', ARGV[1] .. d)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SREM', KEYS[6], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {events, days}
"""
_ERASE_SHA = hashlib.sha1(_ERASE.encode()).hexdigest()

_SCRIPTS = {_APPEND_SHA: _APPEND, _READ_SHA: _READ, _ERASE_SHA: _ERASE}

#: Events per EVALSHA: keeps ``unpack`` far below Lua's C-stack limit (~8000 values).
_MEMBERS_PER_CALL = 1000


@dataclass(frozen=True, slots=True)
class UsageRollup:
    """One user's stored usage as the signals need it: per-day totals of the folded events,
    where the fold stands, and the events still waiting in the reorder window (time order)."""

    user_id: str
    days: Mapping[date, DayTotals] = field(default_factory=dict)
    state: FoldState | None = None
    pending: tuple[UsageEvent, ...] = ()

    def digest(self, config: SignalsConfig | None = None) -> UsageDigest:
        """The digest of every stored event: the totals, then the pending events folded on."""
        digest = UsageDigest.restore(self.days, self.state, config)
        for event in self.pending:
            digest.add(event, late=True)
        return digest

    def signals(self, now: datetime, config: SignalsConfig | None = None, **kwargs: Any) -> Signals:
        """The signals at ``now`` (or at the latest event, if a clock behind the writers' puts
        ``now`` before it); ``kwargs`` as :meth:`UsageDigest.signals`."""
        digest = self.digest(config)
        last = digest.last_ts
        return digest.signals(now if last is None or last <= now else last, **kwargs)

    @property
    def events(self) -> int:
        """How many events the rollup holds (folded and pending)."""
        return (self.state.count if self.state else 0) + len(self.pending)


# -- encoding ---------------------------------------------------------------------------------


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(
            f"usage event time {ts.isoformat()} has no time zone; make it aware "
            "(e.g. datetime.now(UTC)) so it can be placed on the user's local day"
        )
    return (ts - _EPOCH) // _MICROSECOND


def _score(micros_utc: int, role: str) -> int:
    """Time order with a message before its reply at the same instant (exact in a double)."""
    return 2 * micros_utc + (role != "user")


class _Encoder:
    """Encodes events for one fold configuration: the derived fields (local day, late night,
    relationship-seeking) depend on the zone database and the config, not on Lua."""

    def __init__(self, config: SignalsConfig) -> None:
        self.config = config

    def __call__(self, event: UsageEvent) -> tuple[int, str]:
        """(score, member). Keys in a fixed order so one event has one encoding."""
        micros_utc = _micros(event.ts)
        cfg = self.config
        local = event.ts.astimezone(_zone(event.tz))
        body: dict[str, Any] = {"t": micros_utc, "r": "u" if event.role == "user" else "a"}
        if event.tz != "UTC":
            body["z"] = event.tz
        if event.minor:
            body["m"] = 1
        if event.tokens:
            body["k"] = event.tokens
        if event.chars:
            body["c"] = event.chars
        if event.cues:
            body["q"] = sorted(event.cues)
        if event.relationship_score is not None:
            body["s"] = event.relationship_score
            if event.relationship_score >= cfg.relationship_score_threshold:
                body["h"] = 1
        if event.exposure:
            body["x"] = sorted(event.exposure)
        if event.request_id:
            body["i"] = event.request_id
        if event.analysed:
            body["a"] = 1
        body["d"] = local.date().isoformat()
        if cfg.late_night_start_hour <= local.hour < cfg.late_night_end_hour:
            body["l"] = 1
        member = _encode_member(body)
        return _score(micros_utc, event.role), member


#: One encoder for every member: ``json.dumps`` with these options builds a new one per call.
_encode_member = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _decode(user_id: str, member: str | bytes) -> UsageEvent:
    body = json.loads(member)
    return UsageEvent(
        user_id=user_id,
        ts=_EPOCH + body["t"] * _MICROSECOND,
        role="user" if body["r"] == "u" else "assistant",
        tz=body.get("z", "UTC"),
        minor=bool(body.get("m", 0)),
        tokens=int(body.get("k", 0)),
        chars=int(body.get("c", 0)),
        cues=frozenset(body.get("q", ())),
        relationship_score=body.get("s"),
        exposure=frozenset(body.get("x", ())),
        request_id=body.get("i", ""),
        analysed=bool(body.get("a", 0)),
    )


def _retention_seconds(retention_days: float | None) -> int | None:
    if retention_days is None:
        return None
    if isinstance(retention_days, bool) or not retention_days > 0:
        raise ConfigError(
            f"retention_days must be a positive number of days (or None to keep usage "
            f"forever), not {retention_days!r}",
            field="retention_days",
        )
    return max(1, int(retention_days * 86400))


def _reorder(window_s: float, max_events: int) -> tuple[int, int]:
    """The reorder window in score units (2 per microsecond) and the pending cap, validated."""
    if isinstance(window_s, bool) or not window_s >= 0:
        raise ConfigError(
            f"reorder_window_s must be >= 0 seconds, not {window_s!r}", field="reorder_window_s"
        )
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
        raise ConfigError(
            f"reorder_max_events must be a whole number >= 0, not {max_events!r}",
            field="reorder_max_events",
        )
    return 2 * micros(window_s / 60), max_events


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- in memory ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _MemoryUser:
    """One user in the memory store: raw events, the fold, and what waits to be folded."""

    digest: UsageDigest
    #: encoded member -> (score, event)
    events: dict[str, tuple[int, UsageEvent]] = field(default_factory=dict)
    pending: dict[str, tuple[int, UsageEvent]] = field(default_factory=dict)
    newest: int | None = None
    settled: int | None = None
    #: local day -> last write (epoch ms), like the Redis days set.
    day_writes: dict[date, int] = field(default_factory=dict)


class MemoryUsageStore:
    """Usage in a dict in this process: the embedded default (one process; gone on restart).

    Same contract as :class:`RedisUsageStore` (the same fold, reorder window and retention), so
    tests and small deployments behave like production. Safe for one event loop: no method
    awaits between reads and writes.
    """

    def __init__(
        self,
        *,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        signals: SignalsConfig | None = None,
        reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
        reorder_max_events: int = DEFAULT_REORDER_MAX_EVENTS,
    ) -> None:
        self.retention_s = _retention_seconds(retention_days)
        self.config = signals or SignalsConfig()
        self._window, self._max_pending = _reorder(reorder_window_s, reorder_max_events)
        self._encode = _Encoder(self.config)
        self._users: dict[str, _MemoryUser] = {}

    def _cutoff_ms(self) -> int | None:
        return None if self.retention_s is None else _now_ms() - self.retention_s * 1000

    async def append(self, events: Sequence[UsageEvent]) -> int:
        encoded = [(event, *self._encode(event)) for event in events]  # validate the batch first
        added = 0
        now = _now_ms()
        for event, score, member in encoded:
            mine = self._users.get(event.user_id)
            if mine is None:
                mine = self._users[event.user_id] = _MemoryUser(UsageDigest(self.config))
            if member in mine.events:
                continue
            mine.events[member] = (score, event)
            added += 1
            if mine.settled is not None and score < mine.settled:
                mine.digest.add(event, late=True)
                self._wrote(mine, event, now)
            else:
                mine.pending[member] = (score, event)
                mine.newest = score if mine.newest is None else max(mine.newest, score)
        for user in {event.user_id for event in events}:
            self._settle(self._users[user], now)
            self._trim(user)
        return added

    def _settle(self, mine: _MemoryUser, now: int) -> None:
        """Fold the pending events that left the reorder window, oldest first."""
        if not mine.pending or mine.newest is None:
            return
        oldest = min(score for score, _ in mine.pending.values())
        if oldest > mine.newest - self._window and len(mine.pending) <= self._max_pending:
            return  # the common case: nothing left the window
        order = sorted(mine.pending.items(), key=lambda kv: (kv[1][0], kv[0]))
        for member, (score, event) in order:
            if score > mine.newest - self._window and len(mine.pending) <= self._max_pending:
                break
            del mine.pending[member]
            mine.digest.add(event)
            mine.settled = score
            self._wrote(mine, event, now)

    def _wrote(self, mine: _MemoryUser, event: UsageEvent, now: int) -> None:
        state = mine.digest.state()
        days = {event.ts.astimezone(_zone(event.tz)).date()}
        if state is not None:
            days.add(state.last_day)
        for day in days:
            mine.day_writes[day] = now

    def _trim(self, user: str) -> None:
        """Retention for one user, on their write (as Redis does in the append script)."""
        cutoff = self._cutoff_ms()
        if cutoff is None:
            return
        floor = 2 * cutoff * 1000
        mine = self._users[user]
        for member in [m for m, (score, _) in mine.events.items() if score < floor]:
            del mine.events[member]
        for day in [d for d, at in mine.day_writes.items() if at < cutoff]:
            del mine.day_writes[day]
        if not mine.events and not mine.day_writes and not mine.pending:
            del self._users[user]

    async def rollup(self, user_id: str) -> UsageRollup:
        mine = self._users.get(user_id)
        if mine is None:
            return UsageRollup(user_id)
        cutoff = self._cutoff_ms()
        kept = {d for d, at in mine.day_writes.items() if cutoff is None or at >= cutoff}
        pending = sorted(mine.pending.items(), key=lambda kv: (kv[1][0], kv[0]))
        return UsageRollup(
            user_id,
            {d: t for d, t in mine.digest.days().items() if d in kept},
            mine.digest.state(),
            tuple(event for _, (_, event) in pending),
        )

    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        floor = _floor(since, self._cutoff_ms())
        mine = self._users.get(user_id)
        stored = mine.events.values() if mine else ()
        found = sorted((e for score, e in stored if floor is None or score >= floor), key=_order)
        return [e for e in found if since is None or e.ts >= since]

    async def users(self) -> list[str]:
        cutoff = self._cutoff_ms()
        floor = None if cutoff is None else 2 * cutoff * 1000
        return sorted(
            user
            for user, mine in self._users.items()
            if floor is None or any(score >= floor for score, _ in mine.events.values())
        )

    async def erase(self, user_id: str) -> ErasedUsage:
        mine = self._users.pop(user_id, None)
        if mine is None:
            return ErasedUsage()
        return ErasedUsage(events=len(mine.events), days=len(mine.day_writes))

    async def aclose(self) -> None:
        return None


def _order(event: UsageEvent) -> tuple[datetime, int]:
    return event.ts, 0 if event.role == "user" else 1


def _floor(since: datetime | None, cutoff_ms: int | None) -> int | None:
    """The lowest score to read: ``since`` or the retention cutoff, whichever is later."""
    floors = [
        f
        for f in (
            None if since is None else 2 * _micros(since),
            None if cutoff_ms is None else 2 * cutoff_ms * 1000,
        )
        if f is not None
    ]
    return max(floors) if floors else None


# -- Redis ------------------------------------------------------------------------------------


class RedisUsageStore:
    """Usage in Redis (layout in the module docstring); works on Redis Cluster.

    ``client`` is a URL (``redis://host:port/db``) or a ``redis.asyncio`` client you own (a
    ``Redis`` or a ``RedisCluster``); a client made from a URL is closed by :meth:`aclose`.
    Any event loop may call it: calls run on the loop its connections belong to
    (:mod:`persona_mw.stores.loops`).
    ``retention_days`` trims older events on every write and expires a user's usage that long
    after their last write; ``None`` keeps usage forever. ``signals`` sets how the rollup folds
    (the deployment's :class:`~persona_mw.signals.config.SignalsConfig`).
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        signals: SignalsConfig | None = None,
        reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
        reorder_max_events: int = DEFAULT_REORDER_MAX_EVENTS,
        socket_timeout: float = 2.0,
    ) -> None:
        self.retention_s = _retention_seconds(retention_days)
        self.config = signals or SignalsConfig()
        window, max_pending = _reorder(reorder_window_s, reorder_max_events)
        cfg = self.config
        self._fold_args = (
            str(micros(cfg.session_idle_gap_minutes)),
            str(micros(cfg.active_gap_cap_minutes)),
            str(micros(cfg.session_tail_minutes)),
            str(window),
            str(max_pending),
        )
        self._encode = _Encoder(cfg)
        self._connect: Callable[[], Any] | None = None
        if isinstance(client, str):
            self._connect = connector(client, socket_timeout)
            client = self._connect()
        self._client: Any = client
        self._home = HomeLoop(self._home_stopped)
        self.prefix = prefix
        #: Deployment-wide: user tag -> last write. Its own slot (see the module docstring).
        self.users_key = f"{prefix}usage:users"

    def _home_stopped(self) -> None:
        """The loop this store ran on has stopped (see :mod:`persona_mw.stores.loops`): its
        connections stay with it; a client made here starts afresh on this loop."""
        if self._connect is not None:
            self._client = self._connect()

    @property
    def client(self) -> Any:
        return self._client

    def events_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage:events")

    def id_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage:id")

    def live_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage:live")

    def pending_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage:pending")

    def days_key(self, user_id: str) -> str:
        return user_key(self.prefix, user_id, "usage:days")

    def day_key_prefix(self, user_id: str) -> str:
        """Prefix of the user's day hashes (``...:usage:d:`` + ``YYYY-MM-DD``)."""
        return user_key(self.prefix, user_id, "usage:d:")

    def _cutoff_ms(self) -> int | None:
        return None if self.retention_s is None else _now_ms() - self.retention_s * 1000

    async def _script(self, send: Callable[[], Any]) -> Any:
        """Run ``send`` (a pipeline or a call that uses our scripts); on a server that does
        not know them yet (a fresh or restarted one) load them and send again, once: appends
        are idempotent and the rest only read or delete."""
        try:
            return await send()
        except NoScriptError:
            for script in _SCRIPTS.values():
                await self._client.script_load(script)
            return await send()

    @on_home_loop
    async def append(self, events: Sequence[UsageEvent]) -> int:
        if not events:
            return 0
        per_user: dict[str, dict[str, int]] = {}
        for event in events:  # encode (and validate) everything before anything is sent
            score, member = self._encode(event)
            per_user.setdefault(event.user_id, {})[member] = score
        try:
            return int(await self._script(lambda: self._append(per_user)))
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "writing usage events") from exc

    async def _append(self, per_user: dict[str, dict[str, int]]) -> int:
        """One pipeline: per user one EVALSHA (all their keys, one slot), then the user list."""
        now = _now_ms()
        cutoff = self._cutoff_ms()
        ttl_arg = str(self.retention_s or 0)
        pipe = self._client.pipeline(transaction=False)
        for user, members in per_user.items():
            keys = (
                self.events_key(user),
                self.id_key(user),
                index_key(self.prefix, user),
                self.live_key(user),
                self.pending_key(user),
                self.days_key(user),
            )
            head = (str(now), ttl_arg, user, self.day_key_prefix(user), *self._fold_args)
            # In time order: a batch then folds like events that arrived one by one in order.
            ordered = sorted(members.items(), key=lambda kv: (kv[1], kv[0]))
            flat = [x for member, score in ordered for x in (score, member)]
            for start in range(0, len(flat), 2 * _MEMBERS_PER_CALL):
                chunk = flat[start : start + 2 * _MEMBERS_PER_CALL]
                # execute_command: redis-py's cluster pipeline blocks the evalsha() helper, not
                # the command (it routes EVALSHA by its keys, all in this user's slot).
                pipe.execute_command("EVALSHA", _APPEND_SHA, len(keys), *keys, *head, *chunk)
        # Score = the user's latest event (ms), only ever raised: users() and retention agree
        # on "active within the window" with the in-memory store.
        pipe.zadd(
            self.users_key,
            {user_tag(u): max(m.values()) // 2000 for u, m in per_user.items()},
            gt=True,
        )
        if cutoff is not None:
            pipe.zremrangebyscore(self.users_key, "-inf", f"({cutoff}")
        results = await pipe.execute()
        return sum(int(added) for added in results[: -2 if cutoff is not None else -1])

    @on_home_loop
    async def rollup(self, user_id: str) -> UsageRollup:
        cutoff = self._cutoff_ms()
        keys = (
            self.live_key(user_id),
            self.pending_key(user_id),
            self.days_key(user_id),
            self.id_key(user_id),
        )
        args = (self.day_key_prefix(user_id), "-inf" if cutoff is None else str(cutoff))
        try:
            live, pending, totals = await self._script(
                lambda: self._client.execute_command("EVALSHA", _READ_SHA, 4, *keys, *args)
            )
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "reading a usage rollup") from exc
        days = {
            date.fromisoformat(_text(totals[i])): _day_totals(_pairs(totals[i + 1]))
            for i in range(0, len(totals), 2)
        }
        return UsageRollup(
            user_id,
            days,
            _fold_state(user_id, _pairs(live)),
            tuple(_decode(user_id, m) for m in pending),
        )

    @on_home_loop
    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        floor = _floor(since, self._cutoff_ms())
        try:
            members = await self._client.zrangebyscore(
                self.events_key(user_id), "-inf" if floor is None else floor, "+inf"
            )
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "reading usage events") from exc
        found = sorted((_decode(user_id, m) for m in members), key=_order)
        return [e for e in found if since is None or e.ts >= since]

    @on_home_loop
    async def users(self) -> list[str]:
        cutoff = self._cutoff_ms()
        try:
            tags = await self._client.zrangebyscore(
                self.users_key, "-inf" if cutoff is None else cutoff, "+inf"
            )
            if not tags:
                return []
            pipe = self._client.pipeline(transaction=False)
            for tag in tags:
                pipe.get(f"{self.prefix}{{{_text(tag)}}}:usage:id")
            ids = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "listing users") from exc
        return sorted(_text(i) for i in ids if i is not None)

    @on_home_loop
    async def erase(self, user_id: str) -> ErasedUsage:
        keys = (
            self.events_key(user_id),
            self.id_key(user_id),
            self.live_key(user_id),
            self.pending_key(user_id),
            self.days_key(user_id),
            index_key(self.prefix, user_id),
        )

        async def send() -> Any:
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command(
                "EVALSHA", _ERASE_SHA, len(keys), *keys, self.day_key_prefix(user_id)
            )
            pipe.zrem(self.users_key, user_tag(user_id))
            return await pipe.execute()

        try:
            (events, days), _ = await self._script(send)
        except (RedisError, OSError) as exc:
            raise _store_error(exc, "erasing a user's usage") from exc
        return ErasedUsage(events=int(events), days=int(days))

    @on_home_loop
    async def aclose(self) -> None:
        if self._connect is not None:
            await self._client.aclose()


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _day_totals(raw: Mapping[str, str]) -> DayTotals:
    def n(name: str) -> int:
        return int(raw.get(name, 0))

    return DayTotals(
        active_us=n("a"),
        messages=n("m"),
        sessions=n("s"),
        late=n("l"),
        analysed=n("y"),
        cues={k[2:]: int(v) for k, v in raw.items() if k.startswith("c:")},
        assistant=n("b"),
        exposed=n("x"),
        scored=n("k"),
        relationship_hits=n("h"),
    )


def _fold_state(user_id: str, live: Mapping[str, str]) -> FoldState | None:
    if "ls" not in live:
        return None
    score = int(live["ls"])
    return FoldState(
        last=UsageEvent(
            user_id=user_id,
            ts=_EPOCH + (score // 2) * _MICROSECOND,
            role="assistant" if score % 2 else "user",
            tz=live["lz"],
            minor=live["lm"] == "1",
        ),
        last_day=date.fromisoformat(live["ld"]),
        session_start=_EPOCH + int(live["ss"]) * _MICROSECOND,
        session_days=frozenset(date.fromisoformat(d) for d in live["sd"].split(",") if d),
        count=int(live["n"]),
    )


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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _store_error(exc: Exception, doing: str) -> StoreError:
    return StoreError(
        f"Redis failed {doing} ({type(exc).__name__}: {exc}); check the usage store URL and "
        "that the server is up"
    )
