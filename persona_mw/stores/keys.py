"""Redis key layout shared by every store.

All of one user's keys carry the same hash tag, ``{u:<digest>}``, so multi-key operations stay in
one Redis Cluster slot, and each user has an index set listing their keys, so erasing a user
deletes everything of theirs without a SCAN. The digest is a plain (unkeyed) BLAKE2b of the user
id: it normalises ids with braces or odd bytes and keeps raw ids out of key names; it is not a
pseudonym (use the HMAC in logs for that).
"""

from __future__ import annotations

import hashlib

from ..errors import ConfigError

__all__ = ["DEFAULT_PREFIX", "index_key", "same_slot_key", "user_key", "user_tag"]

DEFAULT_PREFIX = "pmw:"


def user_tag(user_id: str) -> str:
    return "u:" + hashlib.blake2b(user_id.encode(), digest_size=8).hexdigest()


def user_key(prefix: str, user_id: str, suffix: str) -> str:
    """``{prefix}{u:<digest>}:{suffix}`` — e.g. ``pmw:{u:3f2a...}:profile``."""
    return f"{prefix}{{{user_tag(user_id)}}}:{suffix}"


def index_key(prefix: str, user_id: str) -> str:
    """The set of every key that belongs to the user (all in the same slot)."""
    return user_key(prefix, user_id, "keys")


def same_slot_key(key: str, suffix: str) -> str:
    """A key in ``key``'s Redis Cluster slot, for a script that touches both: ``key``'s hash
    tag when it has one (``pmw:{u:3f2a}:keys`` -> ``{u:3f2a}<suffix>``), else the whole key as
    the tag (``pmw:signals:aggregate:2027`` -> ``{pmw:signals:aggregate:2027}<suffix>``)."""
    start = key.find("{")
    end = key.find("}", start + 1) if start != -1 else -1
    if start != -1 and end > start + 1:
        return key[start : end + 1] + suffix
    if "}" in key:  # no tag, but a brace no tag of ours could carry: Cluster hashes it whole
        raise ConfigError(
            f"Redis key {key!r} has braces but no hash tag: Redis Cluster could not keep "
            "it in one slot with its companions. Use a key prefix without braces."
        )
    return "{" + key + "}" + suffix
