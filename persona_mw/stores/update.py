"""Read-modify-write of a profile that never silently loses a concurrent update."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ProfileConflictError
from ..profile import Profile, parse_profile
from ..types import ProfileStore

__all__ = ["merge_patch", "update_profile"]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: objects merge recursively, ``None`` deletes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


async def update_profile(
    store: ProfileStore,
    user_id: str,
    change: Callable[[Profile], Profile] | Mapping[str, Any],
    *,
    attempts: int = 5,
    default: Callable[[str], Profile] = Profile.default,
) -> Profile:
    """Apply ``change`` (a function of the current profile, or a merge patch) and store it.

    Uses optimistic concurrency: when another writer got in between, re-read and re-apply, up to
    ``attempts`` times, then raise :class:`ProfileConflictError`. A user without a profile starts
    from ``default(user_id)``: pass the deployment's (``Middleware.default_profile``) so a first
    write keeps what it sets, such as an age band for every user. Raises ProfileValidationError
    when the result is not a valid profile.
    """
    last: ProfileConflictError | None = None
    for _ in range(attempts):
        current = await store.get(user_id) or default(user_id)
        if callable(change):
            updated = change(current)
        else:
            body = current.model_dump(mode="json", exclude={"version", "user_id"})
            updated = parse_profile(merge_patch(body, change), user_id=user_id)
        try:
            return await store.put(updated, expected_version=current.version)
        except ProfileConflictError as exc:
            last = exc
    assert last is not None
    raise last
