"""The embedded default store: a dict in this process. Nothing to install or start."""

from __future__ import annotations

from collections.abc import Collection

from ..errors import ProfileConflictError
from ..profile import Profile
from ..types import Lookup
from .keys import user_tag
from .retain import retained

__all__ = ["MemoryProfileStore"]


class MemoryProfileStore:
    """Profiles in a dict. Versioned like the Redis store, so code moves between them unchanged.

    Safe for one event loop (every method runs without awaiting in between, so no interleaving).
    """

    remote = False

    def __init__(self) -> None:
        self._profiles: dict[str, Profile] = {}

    async def get(self, user_id: str) -> Profile | None:
        return self._profiles.get(user_id)

    async def lookup(self, user_id: str) -> Lookup:
        return Lookup(self._profiles.get(user_id), "store")

    async def ping(self) -> None:
        return None

    async def put(self, profile: Profile, *, expected_version: int | None = None) -> Profile:
        current = self._profiles.get(profile.user_id)
        current_version = current.version if current else 0
        if expected_version is not None and expected_version != current_version:
            raise ProfileConflictError(user_tag(profile.user_id), expected_version, current_version)
        stored = profile.model_copy(update={"version": current_version + 1})
        self._profiles[profile.user_id] = stored
        return stored

    async def delete(self, user_id: str, *, keep: Collection[str] = ()) -> bool:
        left = retained(self._profiles.get(user_id), keep)
        removed = self._profiles.pop(user_id, None)
        if left is not None:
            self._profiles[user_id] = left
        return removed is not None

    async def aclose(self) -> None:
        return None
