"""Who may do what: roles, ownership and deployer-owned profile fields. Pure functions only.

=============================  =====  ==================  ======
action                         app    user (own id only)  admin
=============================  =====  ==================  ======
chat completions, list models  yes    models only         yes
read the policy                yes    own / general       yes
read/update/delete profile     no     own                 yes
read usage and limits          no     own                 yes
erase all of a user's data     no     own                 yes
the deployment dashboard       no     no                  yes
=============================  =====  ==================  ======

Without any API key configured the server runs open (loopback only) and everything is allowed.
Tier-1 and tier-2 rules live in the deployment's config and no endpoint writes them; the profile
fields the deployer owns (age band, known minor) cannot be changed with a ``user`` key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from persona_mw import Profile

from .config import Role

__all__ = ["DEPLOYER_FIELDS", "Action", "Principal", "deny_reason", "deployer_fields_changed"]

Action = Literal[
    "complete",
    "read_models",
    "read_policy",
    "read_profile",
    "write_profile",
    "read_usage",
    "erase_user",
    "read_dashboard",
]

#: Profile fields a ``user`` key may not change: the deployer's knowledge of the user's age
#: decides which tier-2 rules apply, so a user could otherwise opt out of minor protections;
#: the laws that apply to the user decide tier 1, so a user could otherwise opt out of a law.
DEPLOYER_FIELDS = ("age_band", "known_minor", "jurisdictions")

_APP_ACTIONS = frozenset({"complete", "read_models", "read_policy"})
_USER_OWN_ACTIONS = frozenset(
    {"read_policy", "read_profile", "write_profile", "read_usage", "erase_user"}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its API key says. ``role == "open"`` when auth is off."""

    name: str
    role: Role | Literal["open"]
    user: str | None = None


def deny_reason(principal: Principal, action: Action, user_id: str | None = None) -> str | None:
    """None when ``principal`` may do ``action`` (on ``user_id``'s data); else why not."""
    if principal.role in ("admin", "open"):
        return None
    if action == "read_dashboard":
        return (
            f"key {principal.name!r} has role {principal.role!r}; the deployment dashboard shows "
            "every user's aggregate figures and needs a key with role 'admin'"
        )
    if principal.role == "app":
        if action in _APP_ACTIONS:
            return None
        return (
            f"key {principal.name!r} has role 'app', which may call completions for its users but "
            "not manage their data; use an admin key or the user's own key"
        )
    if action == "read_models" or (action == "read_policy" and user_id is None):
        return None
    if action not in _USER_OWN_ACTIONS:
        return (
            f"key {principal.name!r} has role 'user', which may manage its own profile but not "
            "call completions"
        )
    if user_id != principal.user:
        return f"key {principal.name!r} may act only for its own user id, not for another user"
    return None


def deployer_fields_changed(old: Profile, new: Profile) -> list[str]:
    """The deployer-owned fields that differ between two versions of a profile."""
    return [f for f in DEPLOYER_FIELDS if getattr(old, f) != getattr(new, f)]
