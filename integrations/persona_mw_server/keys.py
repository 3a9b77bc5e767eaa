"""API keys: generated, hashed and checked in constant time.

Only the hash of a key is ever written in a config file. Keys are random 256-bit tokens, so a
plain SHA-256 is enough (a slow password hash only helps against guessable secrets). Checking a
presented key hashes it once and compares against every configured hash with
:func:`hmac.compare_digest`, without stopping at the first match, so timing tells nothing about
which (or whether a) key matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["HASH_SCHEME", "find_key", "hash_key", "new_key"]

HASH_SCHEME = "sha256"
_KEY_PREFIX = "pmw-"

T = TypeVar("T")


def new_key() -> str:
    """A fresh API key: ``pmw-`` and 43 URL-safe characters (256 bits)."""
    return _KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The value to put in the config's ``key_hash``: ``sha256:<64 hex digits>``."""
    if not key or key != key.strip():
        raise ValueError("an API key must be non-empty and have no surrounding whitespace")
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode()).hexdigest()}"


def find_key(presented: str, entries: Sequence[tuple[str, T]]) -> T | None:
    """The value paired with the hash that ``presented`` matches, or None.

    ``entries`` are ``(key_hash, value)`` pairs. Every entry is compared, always.
    """
    digest = hash_key(presented) if presented and presented == presented.strip() else "-"
    found: T | None = None
    for key_hash, value in entries:
        if hmac.compare_digest(digest.encode(), key_hash.encode()) and found is None:
            found = value
    return found
