"""Redis key layout shared by every store.

All of one user's keys carry the same hash tag, ``{u:<digest>}``, so multi-key operations stay in
one Redis Cluster slot, and each user has an index set listing their keys, so erasing a user
deletes everything of theirs without a SCAN. The digest is a plain (unkeyed) BLAKE2b of the user
id: it normalises ids with braces or odd bytes and keeps raw ids out of key names; it is not a
pseudonym (use the HMAC in logs for that).
"""

from __future__ import annotations

import hashlib

__all__ = ["DEFAULT_PREFIX", "index_key", "user_key", "user_tag"]

DEFAULT_PREFIX = "pmw:"


def user_tag(user_id: str) -> str:
    return "u:" + hashlib.blake2b(user_id.encode(), digest_size=8).hexdigest()


def user_key(prefix: str, user_id: str, suffix: str) -> str:
    """``{prefix}{u:<digest>}:{suffix}`` — e.g. ``pmw:{u:3f2a...}:profile``."""
    return f"{prefix}{{{user_tag(user_id)}}}:{suffix}"


def index_key(prefix: str, user_id: str) -> str:
    """The set of every key that belongs to the user (all in the same slot)."""
    return user_key(prefix, user_id, "keys")
