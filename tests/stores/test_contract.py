"""One contract, both stores: what the in-memory store does, the Redis store does too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from persona_mw import (
    CachedProfileStore,
    MemoryProfileStore,
    Middleware,
    Profile,
    ProfileConflictError,
    ProfileStore,
    ProfileValidationError,
    RedisProfileStore,
    update_profile,
)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ProfileStore]:
    if request.param == "memory":
        yield MemoryProfileStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    redis_store = RedisProfileStore(redis_url, prefix=prefix)
    yield redis_store
    await redis_store.aclose()


async def test_unknown_user_is_none(store: ProfileStore) -> None:
    assert await store.get("nobody") is None


async def test_put_get_round_trip_and_versions(store: ProfileStore) -> None:
    first = await store.put(Profile(user_id="ada", own_rules="cite sources"))
    assert first.version == 1
    assert await store.get("ada") == first
    second = await store.put(first.model_copy(update={"own_rules": "be brief"}), expected_version=1)
    assert second.version == 2
    got = await store.get("ada")
    assert got is not None and got.own_rules == "be brief" and got.version == 2


async def test_stale_write_is_refused(store: ProfileStore) -> None:
    await store.put(Profile(user_id="ada"))
    await store.put(Profile(user_id="ada", own_rules="a"), expected_version=1)
    with pytest.raises(ProfileConflictError) as info:
        await store.put(Profile(user_id="ada", own_rules="b"), expected_version=1)
    assert info.value.actual == 2
    got = await store.get("ada")
    assert got is not None and got.own_rules == "a"


async def test_create_only_with_expected_version_zero(store: ProfileStore) -> None:
    await store.put(Profile(user_id="ada"), expected_version=0)
    with pytest.raises(ProfileConflictError):
        await store.put(Profile(user_id="ada"), expected_version=0)


async def test_delete(store: ProfileStore) -> None:
    await store.put(Profile(user_id="ada"))
    assert await store.delete("ada") is True
    assert await store.get("ada") is None
    assert await store.delete("ada") is False


async def test_delete_keeps_named_fields_atomically(store: ProfileStore) -> None:
    """A delete that keeps the deployer's fields leaves only those that are not at their
    default, on a fresh profile whose version still increases (an If-Match read before the
    delete cannot match it), whatever other deletes run at the same time."""
    keep = ("age_band", "known_minor")
    await store.put(Profile(user_id="kit", age_band="13_15", own_rules="mine", timezone="UTC"))
    assert await store.delete("kit", keep=keep) is True
    results = await asyncio.gather(*(store.delete("kit", keep=keep) for _ in range(20)))
    assert all(results)  # something (the kept fields) was there every time
    left = await store.get("kit")
    assert left is not None
    assert (left.age_band, left.known_minor, left.own_rules) == ("13_15", True, "")
    assert left.version == 22
    await store.put(Profile(user_id="ivy", own_rules="mine"))
    assert await store.delete("ivy", keep=keep) is True
    assert await store.get("ivy") is None  # nothing to keep: nothing stored
    assert await store.delete("kit") is True
    assert await store.get("kit") is None
    with pytest.raises(ValueError, match="agee_band"):
        await store.delete("kit", keep=("agee_band",))


async def test_user_write_starts_from_the_given_default(store: ProfileStore) -> None:
    def default(user_id: str) -> Profile:
        return Profile(user_id=user_id, age_band="under_13")

    first = await update_profile(store, "ada", {"style": {"tone": "friendly"}}, default=default)
    assert (first.age_band, first.known_minor, first.style.tone) == ("under_13", True, "friendly")


async def test_user_ids_with_odd_characters(store: ProfileStore) -> None:
    for user in ["{tag}", "a:b:c", "ünïcødé", "x" * 256]:
        await store.put(Profile(user_id=user))
        got = await store.get(user)
        assert got is not None and got.user_id == user


async def test_merge_patch_update_and_validation(store: ProfileStore) -> None:
    await store.put(Profile(user_id="ada", style={"tone": "formal", "verbosity": "brief"}))
    updated = await update_profile(store, "ada", {"style": {"tone": None, "language": "es"}})
    assert updated.style.tone is None
    assert updated.style.verbosity == "brief"
    assert updated.style.language == "es"
    with pytest.raises(ProfileValidationError, match=r"style\.verbosity"):
        await update_profile(store, "ada", {"style": {"verbosity": "epic"}})


async def test_concurrent_updates_lose_nothing(store: ProfileStore) -> None:
    """Twenty writers each add one topic at once: every topic survives (optimistic retries)."""
    await store.put(Profile(user_id="ada"))

    def add(topic: str):
        return lambda p: p.model_copy(update={"topics_to_avoid": [*p.topics_to_avoid, topic]})

    topics = [f"topic {i}" for i in range(20)]
    await asyncio.gather(*(update_profile(store, "ada", add(t), attempts=50) for t in topics))
    final = await store.get("ada")
    assert final is not None
    assert sorted(final.topics_to_avoid) == sorted(topics)
    assert final.version == 21


async def test_what_the_core_asks_of_a_store(store: ProfileStore) -> None:
    """The middleware and the server ask any store, never its class: ``remote`` (put a cache in
    front?), ``lookup`` (the read and its source) and ``ping`` (does it answer?)."""
    await store.put(Profile(user_id="ada", own_rules="x"))
    found = await store.lookup("ada")
    assert found.profile is not None and found.profile.own_rules == "x"
    assert found.source == "store"
    assert (await store.lookup("nobody")).profile is None
    if isinstance(store, RedisProfileStore):
        assert store.remote and await store.ping() is True
    else:
        assert not store.remote and await store.ping() is None
    cached = CachedProfileStore(store)
    assert not cached.remote and await cached.ping() == await store.ping()
    assert isinstance(Middleware(store=store).store, CachedProfileStore) == store.remote
