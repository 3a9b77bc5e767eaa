"""Usage in Redis: :class:`RedisUsageStore`, for deployments of more than one process; works
on Redis Cluster. The contract it keeps is :mod:`persona_mw.signals.usage_store`'s; the fold
runs in Lua (:mod:`persona_mw.signals.usage_lua`).

The layout (keys from :mod:`persona_mw.stores.keys`; all of one user's keys share the hash tag
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
The compact JSON of an event is :mod:`persona_mw.signals.usage_rollup`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from persona_mw.errors import StoreError
from persona_mw.stores.keys import DEFAULT_PREFIX, index_key, user_key, user_tag
from persona_mw.stores.loops import HomeLoop, connector, on_home_loop
from persona_mw.types import ErasedUsage, UsageEvent

from .compute import DayTotals, FoldState, micros
from .config import SignalsConfig
from .usage_lua import APPEND_SHA, ERASE_SHA, READ_SHA, SCRIPTS
from .usage_rollup import (
    DEFAULT_REORDER_MAX_EVENTS,
    DEFAULT_REORDER_WINDOW_S,
    DEFAULT_RETENTION_DAYS,
    EPOCH,
    MICROSECOND,
    Encoder,
    UsageRollup,
    decode,
    event_order,
    now_ms,
    reorder_settings,
    retention_seconds,
    score_floor,
)

__all__ = ["RedisUsageStore"]

#: Events per EVALSHA: keeps ``unpack`` far below Lua's C-stack limit (~8000 values).
_MEMBERS_PER_CALL = 1000


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
        self.retention_s = retention_seconds(retention_days)
        self.config = signals or SignalsConfig()
        window, max_pending = reorder_settings(reorder_window_s, reorder_max_events)
        cfg = self.config
        self._fold_args = (
            str(micros(cfg.session_idle_gap_minutes)),
            str(micros(cfg.active_gap_cap_minutes)),
            str(micros(cfg.session_tail_minutes)),
            str(window),
            str(max_pending),
        )
        self._encode = Encoder(cfg)
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
        return None if self.retention_s is None else now_ms() - self.retention_s * 1000

    async def _script(self, send: Callable[[], Any]) -> Any:
        """Run ``send`` (a pipeline or a call that uses our scripts); on a server that does
        not know them yet (a fresh or restarted one) load them and send again, once: appends
        are idempotent and the rest only read or delete."""
        try:
            return await send()
        except NoScriptError:
            for script in SCRIPTS.values():
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
            raise store_error(exc, "writing usage events") from exc

    async def _append(self, per_user: dict[str, dict[str, int]]) -> int:
        """One pipeline: per user one EVALSHA (all their keys, one slot), then the user list."""
        now = now_ms()
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
                pipe.execute_command("EVALSHA", APPEND_SHA, len(keys), *keys, *head, *chunk)
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
                lambda: self._client.execute_command("EVALSHA", READ_SHA, 4, *keys, *args)
            )
        except (RedisError, OSError) as exc:
            raise store_error(exc, "reading a usage rollup") from exc
        days = {
            date.fromisoformat(redis_text(totals[i])): _day_totals(_pairs(totals[i + 1]))
            for i in range(0, len(totals), 2)
        }
        return UsageRollup(
            user_id,
            days,
            _fold_state(user_id, _pairs(live)),
            tuple(decode(user_id, m) for m in pending),
        )

    @on_home_loop
    async def events(self, user_id: str, since: datetime | None = None) -> list[UsageEvent]:
        floor = score_floor(since, self._cutoff_ms())
        try:
            members = await self._client.zrangebyscore(
                self.events_key(user_id), "-inf" if floor is None else floor, "+inf"
            )
        except (RedisError, OSError) as exc:
            raise store_error(exc, "reading usage events") from exc
        found = sorted((decode(user_id, m) for m in members), key=event_order)
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
                pipe.get(f"{self.prefix}{{{redis_text(tag)}}}:usage:id")
            ids = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise store_error(exc, "listing users") from exc
        return sorted(redis_text(i) for i in ids if i is not None)

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
                "EVALSHA", ERASE_SHA, len(keys), *keys, self.day_key_prefix(user_id)
            )
            pipe.zrem(self.users_key, user_tag(user_id))
            return await pipe.execute()

        try:
            (events, days), _ = await self._script(send)
        except (RedisError, OSError) as exc:
            raise store_error(exc, "erasing a user's usage") from exc
        return ErasedUsage(events=int(events), days=int(days))

    @on_home_loop
    async def aclose(self) -> None:
        if self._connect is not None:
            await self._client.aclose()


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {redis_text(flat[i]): redis_text(flat[i + 1]) for i in range(0, len(flat), 2)}


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
            ts=EPOCH + (score // 2) * MICROSECOND,
            role="assistant" if score % 2 else "user",
            tz=live["lz"],
            minor=live["lm"] == "1",
        ),
        last_day=date.fromisoformat(live["ld"]),
        session_start=EPOCH + int(live["ss"]) * MICROSECOND,
        session_days=frozenset(date.fromisoformat(d) for d in live["sd"].split(",") if d),
        count=int(live["n"]),
    )


def redis_text(value: bytes | str) -> str:
    """A Redis reply as text (a client made without ``decode_responses`` answers bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def store_error(exc: Exception, doing: str) -> StoreError:
    """What a failed call to the usage Redis (usage, and the signals state beside it) raises."""
    return StoreError(
        f"Redis failed {doing} ({type(exc).__name__}: {exc}); check the usage store URL and "
        "that the server is up"
    )
