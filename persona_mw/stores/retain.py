"""What a delete keeps: the deployer-owned fields a user may not shed by deleting their profile.

A store deletes and writes back what it keeps in one atomic step (a Lua script on Redis, one
synchronous call in memory), so no concurrent request can slip in between and leave a minor the
deployer marked with no protection. Only values that differ from the field's default are kept:
a user with nothing to keep is left with no stored profile at all.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..profile import Profile

__all__ = ["kept_defaults", "retained"]


def kept_defaults(keep: Collection[str]) -> dict[str, Any]:
    """``{field: default}`` for the fields to keep; ValueError naming an unknown field."""
    fields = Profile.model_fields
    unknown = sorted(set(keep) - set(fields))
    if unknown:
        raise ValueError(f"cannot keep unknown profile field(s) {', '.join(unknown)}")
    return {name: fields[name].get_default(call_default_factory=True) for name in keep}


def retained(profile: Profile | None, keep: Collection[str]) -> Profile | None:
    """The profile a delete leaves behind: the kept fields that are not at their default, on an
    otherwise default profile (version one past the deleted one); None when there are none."""
    defaults = kept_defaults(keep)
    if profile is None:
        return None
    kept = {
        name: getattr(profile, name)
        for name, default in defaults.items()
        if getattr(profile, name) != default
    }
    if not kept:
        return None
    return Profile.default(profile.user_id).model_copy(
        update={**kept, "version": profile.version + 1}
    )
