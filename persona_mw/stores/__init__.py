"""Profile stores: in-memory (the embedded default), Redis, and a read cache in front."""

from .cache import CachedProfileStore, Lookup
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
    "update_profile",
    "user_key",
    "user_tag",
]
