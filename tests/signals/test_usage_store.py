"""One contract, both usage stores: what the in-memory store does, the Redis store does too; then
what only Redis has (key layout, hash tags, TTL, erasure leaving no key, one round trip)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio

from persona_mw.errors import ConfigError, StoreError
from persona_mw.signals import ErasedUsage, UsageEvent
from persona_mw.signals.usage_store import (
    MemoryUsageStore,
    RedisUsageStore,
    UsageStore,
    open_usage_store,
)
from persona_mw.stores.keys import index_key, user_tag

NOW = datetime.now(UTC).replace(microsecond=123456)


def ev(user: str = "ada", minutes_ago: float = 0, role: str = "user", **kw: Any) -> UsageEvent:
    return UsageEvent(
        user_id=user,
        ts=NOW - timedelta(minutes=minutes_ago),
        role=role,  # type: ignore[arg-type]
        **kw,
    )


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    redis_store = RedisUsageStore(redis_url, prefix=prefix)
    yield redis_store
    await redis_store.aclose()


async def test_round_trip_keeps_every_field(store: UsageStore) -> None:
    full = ev(
        "ada",
        5,
        "assistant",
        tz="Europe/Paris",
        minor=True,
        tokens=321,
        chars=1200,
        cues=frozenset({"dependence", "support_seeking"}),
        relationship_score=0.3125,
        exposure=frozenset({"style", "own_rules"}),
        request_id="req-1",
        analysed=True,
    )
    bare = ev("ada", 6)
    assert await store.append([full, bare]) == 2
    assert await store.events("ada") == [bare, full]


async def test_events_are_ordered_and_filtered_by_since(store: UsageStore) -> None:
    events = [ev("ada", m, request_id=f"r{m}") for m in (50, 10, 30, 20, 40)]
    await store.append(events)
    got = await store.events("ada")
    assert [e.request_id for e in got] == ["r50", "r40", "r30", "r20", "r10"]
    since = NOW - timedelta(minutes=30)
    assert [e.request_id for e in await store.events("ada", since=since)] == ["r30", "r20", "r10"]


async def test_since_is_exact_to_the_microsecond(store: UsageStore) -> None:
    """Scores are milliseconds; the cut at ``since`` must still be exact."""
    a = UsageEvent("ada", NOW, "user", request_id="a")
    b = UsageEvent("ada", NOW + timedelta(microseconds=1), "user", request_id="b")
    await store.append([a, b])
    got = await store.events("ada", since=NOW + timedelta(microseconds=1))
    assert got == [b]


async def test_same_event_twice_is_stored_once(store: UsageStore) -> None:
    """A retried batch that had in fact reached the store must not double-count."""
    e = ev("ada", 1, request_id="r1", tokens=3)
    assert await store.append([e]) == 1
    assert await store.append([e, e]) == 0
    assert await store.events("ada") == [e]


async def test_distinct_events_at_the_same_instant_are_kept(store: UsageStore) -> None:
    pair = [ev("ada", 0, "user", request_id="r1"), ev("ada", 0, "assistant", request_id="r1")]
    other = ev("ada", 0, "user", request_id="r2")
    assert await store.append([*pair, other]) == 3
    assert len(await store.events("ada")) == 3


async def test_users_are_kept_apart_and_listed_by_id(store: UsageStore) -> None:
    odd = "user {with} braces: ünïcode / slashes"
    await store.append([ev("ada", 1), ev("bob", 2), ev(odd, 3), ev("bob", 4)])
    assert await store.users() == sorted(["ada", "bob", odd])
    assert [e.user_id for e in await store.events(odd)] == [odd]
    assert len(await store.events("bob")) == 2
    assert await store.events("nobody") == []


async def test_erase_removes_the_user_and_only_them(store: UsageStore) -> None:
    await store.append([ev("ada", 1), ev("ada", 2), ev("bob", 1)])
    assert (await store.erase("ada")).events == 2
    assert await store.events("ada") == []
    assert await store.users() == ["bob"]
    assert len(await store.events("bob")) == 1
    assert await store.erase("ada") == ErasedUsage()


async def test_rollup_folds_each_event_once_and_shows_what_waits(store: UsageStore) -> None:
    """Events newer than the reorder window wait unfolded but readable; older ones are in the
    day totals; a retried batch changes nothing."""
    batch = [ev("ada", 10, request_id="a"), ev("ada", 9, "assistant", request_id="a")]
    batch += [ev("ada", 0.5, request_id="b")]
    for _ in range(2):
        await store.append(batch)
    rollup = await store.rollup("ada")
    assert rollup.pending == (batch[2],) and rollup.events == 3
    (day,) = rollup.days.values()
    assert (day.messages, day.assistant, day.sessions, day.active_us) == (1, 1, 1, 60_000_000)
    assert rollup.digest().signals(NOW).messages_today == 2
    assert await store.rollup("nobody") == type(rollup)("nobody")


async def test_events_older_than_retention_are_gone(store: UsageStore) -> None:
    """Retention trims on write and hides on read, the same way in both stores."""
    retention_days = 90
    old = ev("ada", (retention_days + 1) * 24 * 60, request_id="old")
    fresh = ev("ada", 1, request_id="fresh")
    stale_user = ev("carol", (retention_days + 2) * 24 * 60)
    await store.append([old, fresh, stale_user])
    assert [e.request_id for e in await store.events("ada")] == ["fresh"]
    assert await store.users() == ["ada"]


async def test_naive_time_is_refused_with_a_fix(store: UsageStore) -> None:
    naive = UsageEvent("ada", datetime(2026, 1, 1, 12, 0), "user")
    with pytest.raises(ValueError, match="no time zone"):
        await store.append([ev("ada", 1), naive])
    assert await store.events("ada") == []  # nothing of a bad batch is written


async def test_a_large_batch_for_one_user_is_stored_whole(store: UsageStore) -> None:
    """An import of thousands of one user's events in one call (Redis splits it into several
    script calls, still one pipeline)."""
    events = [ev("ada", 0, request_id=f"r{i}") for i in range(2500)]
    assert await store.append(events) == 2500
    assert len(await store.events("ada")) == 2500


async def test_empty_batch_is_a_no_op(store: UsageStore) -> None:
    assert await store.append([]) == 0
    assert await store.users() == []


@pytest.mark.parametrize(
    ("retention_days", "message"),
    [(0, "positive"), (-1, "positive"), (True, "positive")],
)
def test_bad_retention_fails_at_start_up(retention_days: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MemoryUsageStore(retention_days=retention_days)
    with pytest.raises(ConfigError, match=message):
        RedisUsageStore("redis://127.0.0.1:1/0", retention_days=retention_days)


@pytest.mark.parametrize(
    ("url", "kind"),
    [("", MemoryUsageStore), (None, MemoryUsageStore), ("redis://127.0.0.1:1/0", RedisUsageStore)],
)
async def test_open_usage_store_picks_by_url(url: str | None, kind: type) -> None:
    opened = open_usage_store(url)
    assert isinstance(opened, kind)
    await opened.aclose()


def test_open_usage_store_names_a_bad_url() -> None:
    with pytest.raises(ConfigError, match=r"usage\.url.*postgres://x"):
        open_usage_store("postgres://x")


# -- Redis only ---------------------------------------------------------------------------------


async def keys_under(client: redis.asyncio.Redis, prefix: str) -> set[str]:
    return {k.decode() async for k in client.scan_iter(match=f"{prefix}*", count=1000)}


async def test_redis_layout_hash_tags_ttl_and_index(
    redis_client: redis.asyncio.Redis, redis_url: str, key_prefix: str
) -> None:
    """Every per-user key carries the user's hash tag (one Cluster slot) and is in the user's
    key index; the event keys expire after the retention window; no raw id in any key name."""
    store = RedisUsageStore(redis_url, prefix=key_prefix, retention_days=7, reorder_window_s=0)
    user = "ada@example.com"
    await store.append([ev(user, 1, tokens=5), ev(user, 0, "assistant")])
    tag = user_tag(user)
    day = store.day_key_prefix(user) + NOW.date().isoformat()
    per_user = {
        store.events_key(user),
        store.id_key(user),
        store.live_key(user),
        store.days_key(user),
        day,
    }
    assert await keys_under(redis_client, key_prefix) == per_user | {
        index_key(key_prefix, user),
        f"{key_prefix}usage:users",
    }
    for key in per_user | {index_key(key_prefix, user)}:
        assert f"{{{tag}}}" in key and user not in key
    for key in per_user:
        ttl = await redis_client.ttl(key)
        assert 7 * 86400 - 5 <= ttl <= 7 * 86400
    index_members: Any = await redis_client.smembers(index_key(key_prefix, user))
    index = {k.decode() for k in index_members}
    assert index == per_user - {day} | {store.pending_key(user)}
    assert await redis_client.zrange(f"{key_prefix}usage:users", 0, -1) == [tag.encode()]
    members: Any = await redis_client.zrange(store.events_key(user), 0, -1, withscores=True)
    raw, score = members[0]
    first = json.loads(raw)
    assert first["k"] == 5 and "text" not in first and user not in raw.decode()
    assert score == 2 * first["t"] and first["d"] == NOW.date().isoformat()
    totals: Any = await redis_client.hgetall(day)
    assert totals[b"m"] == b"1" and totals[b"b"] == b"1" and int(totals[b"a"]) == 60_000_000
    await store.aclose()


async def test_redis_without_retention_sets_no_ttl(
    redis_client: redis.asyncio.Redis, redis_url: str, key_prefix: str
) -> None:
    store = RedisUsageStore(redis_url, prefix=key_prefix, retention_days=None)
    await store.append([ev("ada", 400 * 24 * 60)])
    assert await redis_client.ttl(store.events_key("ada")) == -1
    assert len(await store.events("ada")) == 1
    await store.aclose()


async def test_redis_erase_leaves_no_key_of_the_user(
    redis_client: redis.asyncio.Redis, redis_url: str, key_prefix: str
) -> None:
    store = RedisUsageStore(redis_url, prefix=key_prefix)
    await store.append([ev("ada", m) for m in range(5)] + [ev("bob", 1)])
    assert await store.erase("ada") == ErasedUsage(events=5, days=1)
    left = await keys_under(redis_client, key_prefix)
    assert not any(f"{{{user_tag('ada')}}}" in k for k in left)
    assert await redis_client.zrange(f"{key_prefix}usage:users", 0, -1) == [
        user_tag("bob").encode()
    ]
    await store.aclose()


async def test_redis_batch_is_one_round_trip(key_prefix: str) -> None:
    """A batch for many users is one pipelined round trip (socket writes counted on the
    client's connection); only a server that does not know the scripts yet (a fresh one, our
    own here) costs four more (SCRIPT LOAD of the append, read and erase scripts, then the
    batch again), and only once."""
    from tests.conftest import RedisServer

    server = RedisServer()
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        store = RedisUsageStore(client, prefix=key_prefix)
        await client.ping()
        first = await _pipeline_round_trips(client, store, [ev("u0", 1, request_id="warm")])
        batch = [ev(f"u{i}", i) for i in range(50)]
        steady = await _pipeline_round_trips(client, store, batch)
        assert (first, steady) == (5, 1)
        assert len(await store.users()) == 50
        await store.aclose()  # the client is ours: the store leaves it open
        assert await client.ping()
    finally:
        await client.aclose()
        server.stop()


async def _pipeline_round_trips(
    client: redis.asyncio.Redis, store: RedisUsageStore, events: list[UsageEvent]
) -> int:
    """Count socket writes made while appending (each pipeline execute is one write + read)."""
    connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    await client.connection_pool.release(connection)
    writes = 0
    original = connection.send_packed_command

    async def counting(command: Any, check_health: bool = True) -> None:
        nonlocal writes
        writes += 1
        await original(command, check_health)

    connection.send_packed_command = counting
    try:
        await store.append(events)
    finally:
        connection.send_packed_command = original
    return writes


async def test_redis_unreachable_is_a_store_error_naming_the_fix(key_prefix: str) -> None:
    from tests.conftest import free_port

    store = RedisUsageStore(f"redis://127.0.0.1:{free_port()}/0", prefix=key_prefix)
    for call in (store.append([ev()]), store.events("ada"), store.users(), store.erase("ada")):
        with pytest.raises(StoreError, match="check the usage store URL"):
            await call
    await store.aclose()


# -- Redis Cluster ------------------------------------------------------------------------------


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    import random
    import socket

    while True:
        port = random.randrange(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


class ClusterOfThree:
    """Three masters on loopback (cluster mode, no replicas), torn down after the test."""

    def __init__(self) -> None:
        import shutil
        import subprocess
        import tempfile

        if not shutil.which("redis-cli"):
            pytest.fail("redis-cli is needed to form the cluster (apt-get install redis-tools)")
        self.dir = tempfile.mkdtemp(prefix="persona-cluster-")
        self.ports: list[int] = []
        while len(self.ports) < 3:
            port = _cluster_port()
            if all(abs(port - p) not in (0, 10000) for p in self.ports):
                self.ports.append(port)
        self.procs = [
            subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"{self.dir}/nodes-{port}.conf", "--dir", self.dir],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in self.ports
        ]  # fmt: skip
        for port in self.ports:
            self._wait(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self._wait_ok()

    def _wait(self, port: int) -> None:
        import time

        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _wait_ok(self) -> None:
        import time

        import redis

        deadline = time.monotonic() + 15
        while (
            redis.Redis(host="127.0.0.1", port=self.ports[0]).cluster("info")["cluster_state"]
            != "ok"
        ):
            if time.monotonic() > deadline:
                pytest.fail("the local test cluster did not become ready")
            time.sleep(0.05)

    def close(self) -> None:
        import shutil

        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def test_redis_cluster_append_read_list_erase() -> None:
    """On a real three-node cluster: users spread over slots on different nodes, one batch for
    all of them is one pipeline, and every per-user command stays inside one slot."""
    from redis.asyncio.cluster import RedisCluster

    cluster = ClusterOfThree()
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        store = RedisUsageStore(client, prefix="pmw:")
        users = [f"user-{i}" for i in range(30)]
        assert await store.append([ev(u, m) for u in users for m in (1, 2)]) == 60
        assert await store.users() == sorted(users)
        assert [len(await store.events(u)) for u in users] == [2] * 30
        slots = {client.keyslot(store.events_key(u)) for u in users}
        nodes = {client.get_node_from_key(store.events_key(u)) for u in users}
        assert len(nodes) == 3  # the users really are spread over every node
        assert len(slots) > 3
        assert (await store.erase("user-0")).events == 2
        assert await store.events("user-0") == []
        assert "user-0" not in await store.users()
        keys = await client.keys(f"pmw:{{{user_tag('user-0')}}}*", target_nodes="all")
        assert keys == []
    finally:
        await client.aclose()
        cluster.close()
