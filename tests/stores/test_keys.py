"""Keys a script touches together must share a Redis Cluster slot (redis-py's own slot function
decides, as the cluster's client does)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from persona_mw.errors import ConfigError
from persona_mw.stores.keys import index_key, same_slot_key, user_key


@pytest.mark.parametrize(
    "key",
    [
        "pmw:signals:aggregate:statutory:2027-03",
        "pmw:signals:aggregate:2027",
        "app-1:signals:aggregate:dashboard:2027-03",
        user_key("pmw:", "ada", "signals:actions"),
        index_key("pmw:", "x{y}z"),
        "{shared}pmw:signals:aggregate:2027",
    ],
)
def test_a_companion_key_is_in_the_same_slot(key: str) -> None:
    companion = same_slot_key(key, ":once:0123abcd")
    assert companion != key
    assert key_slot(companion.encode()) == key_slot(key.encode())


@pytest.mark.parametrize("key", ["odd}prefix:signals:aggregate:2027", "a{}b:2027"])
def test_braces_no_tag_can_carry_are_refused_with_the_fix(key: str) -> None:
    """Cluster hashes such a key whole, and a tag holding its '}' cannot be written."""
    with pytest.raises(ConfigError, match="key prefix without braces"):
        same_slot_key(key, ":once:x")


def test_the_state_store_refuses_such_a_prefix_at_once() -> None:
    from persona_mw.signals.action_state import RedisActionStateStore

    with pytest.raises(ConfigError, match="key prefix without braces"):
        RedisActionStateStore("redis://127.0.0.1:1/0", prefix="odd}:")
