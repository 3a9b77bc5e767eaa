"""Where a call's profile comes from: the store, the deployment's default, or a fallback.

One job, apart from the call's steps (:mod:`persona_mw.pipeline`): the rules for a user the
store does not know (the deployment's ``default_profile``), a store that cannot be reached
(degrade to the cached or default profile, or fail closed), and a stored profile that no longer
parses (logged, replaced by the default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ProfileError, StoreError
from .observability import UserHasher, get_logger
from .profile import Profile, parse_profile
from .types import ProfileSource, ProfileStore

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["ProfileLoader"]

_log = get_logger("persona_mw")


class ProfileLoader:
    """Loads a user's profile from ``store`` under the deployment's ``settings``
    (``default_profile``, ``on_store_error``); ``hash_user`` names users in its log events."""

    __slots__ = ("_default", "_fail_closed", "hash_user", "store")

    def __init__(self, store: ProfileStore, settings: Settings, hash_user: UserHasher) -> None:
        self.store = store
        self.hash_user = hash_user
        self._default: dict[str, Any] = settings.default_profile
        self._fail_closed = settings.on_store_error == "fail_closed"

    async def load(self, user_id: str) -> tuple[Profile, ProfileSource]:
        """The user's profile and where it came from. Unknown users get the default profile; a
        store that cannot be reached gives the cached or default profile (or StoreError when
        ``on_store_error`` is ``"fail_closed"``); a malformed stored profile is logged and
        replaced by the default."""
        try:
            found = await self.store.lookup(user_id)
        except StoreError as exc:
            if self._fail_closed:
                raise
            _log.warning("profile.store_unavailable", user=self.hash_user(user_id), error=str(exc))
            return self.default(user_id), "fallback"
        except ProfileError as exc:
            _log.error("profile.invalid_stored", user=self.hash_user(user_id), error=str(exc))
            return self.default(user_id), "default"
        if found.profile is None:
            return self.default(user_id), "default"
        return found.profile, found.source

    def default(self, user_id: str) -> Profile:
        """The deployment's default profile for ``user_id`` (the built-in one when none is set)."""
        if not self._default:
            return Profile.default(user_id)
        return parse_profile(self._default, user_id=user_id)
