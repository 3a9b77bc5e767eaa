"""Profile stores: in-memory (the embedded default), Redis, and a read cache in front."""

from ..types import Lookup
from .cache import CachedProfileStore
from .keys import DEFAULT_PREFIX, index_key, user_key, user_tag
from .memory import MemoryProfileStore
from .redis import RedisProfileStore
from .update import merge_patch, update_profile

__all__ = [
    "DEFAULT_PREFIX",
    "CachedProfileStore",
    "Lookup",
    "MemoryProfileStore",
    "RedisProfileStore",
    "index_key",
    "merge_patch",
    "open_store",
    "update_profile",
    "user_key",
    "user_tag",
]


def open_store(
    url: str | None = None, *, prefix: str = DEFAULT_PREFIX
) -> MemoryProfileStore | RedisProfileStore:
    """A store for ``url``: ``redis://``, ``rediss://``, ``unix://`` → Redis; empty → memory."""
    if not url:
        return MemoryProfileStore()
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisProfileStore(url, prefix=prefix)
    from ..errors import ConfigError

    raise ConfigError(
        f"unsupported store URL {url!r}; use redis://host:port/db or leave it empty for the "
        "embedded in-memory store",
        field="store.url",
    )
