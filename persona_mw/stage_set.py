"""What a middleware asks of all its stages at once: a user's right to see and erase their
data, the policy in force, the rules that take an action, and closing.

Each stage says what it can do through an optional protocol of the contract
(``HoldsUserData``, ``ReportsUsage``, ``ExplainsPolicy``, ``DeclaresRules``) or an ``aclose``;
these functions ask every stage once, in the order the data flows (:func:`every_stage`). The
:class:`~persona_mw.pipeline.Middleware` methods of the same names call them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from .observability import UserHasher, get_logger
from .profile import Profile
from .types import (
    Action,
    DeclaresRules,
    ExplainsPolicy,
    FinishStage,
    HoldsUserData,
    InputStage,
    OutputStage,
    ProfileStore,
    ReportsUsage,
)

__all__ = ["close_all", "erase_user", "every_stage", "explain_policy", "rules_that", "usage_report"]

_log = get_logger("persona_mw")


def every_stage(
    input_stages: Iterable[InputStage],
    output_stages: Iterable[OutputStage],
    finish_stages: Iterable[FinishStage],
) -> list[Any]:
    """Every stage once, finish stages first: closing and erasing go through the stores the
    finish stages write (the usage recorder flushes and erases) before the stages that cache
    what those hold (the dependence stage), so a load between the two finds nothing to bring
    back."""
    seen: list[Any] = []
    for stage in (*finish_stages, *input_stages, *output_stages):
        if not any(stage is s for s in seen):
            seen.append(stage)
    return seen


async def erase_user(
    stages: Iterable[Any],
    store: ProfileStore,
    user_id: str,
    *,
    keep: Collection[str] = (),
    hash_user: UserHasher,
) -> dict[str, Any]:
    """Erase everything stored about the user: every stage's data (usage, action state), then
    the profile (keeping the fields named in ``keep``). Returns what each part removed.

    The stages go first: on Redis the profile's delete also sweeps every key in the user's key
    index (usage, action state), so a stage erasing after it would find nothing left and report
    0 removed although its data was just deleted."""
    parts: dict[str, Any] = {}
    for stage in stages:
        if isinstance(stage, HoldsUserData):
            parts[stage.name] = await stage.erase(user_id)
    erased: dict[str, Any] = {"profile": await store.delete(user_id, keep=keep), **parts}
    _log.info("user.erased", user=hash_user(user_id), parts=sorted(erased))
    return erased


async def usage_report(stages: Iterable[Any], user_id: str) -> dict[str, Any]:
    """What the stages know about the user's usage (their own data, for the user to see)."""
    report: dict[str, Any] = {}
    for stage in stages:
        if isinstance(stage, ReportsUsage):
            report[stage.name] = await stage.usage_report(user_id)
    return report


def explain_policy(stages: Iterable[Any], profile: Profile) -> dict[str, Any]:
    """Every rule in force for this profile, with its tier and why (from stages that can)."""
    return {
        stage.name: stage.explain(profile) for stage in stages if isinstance(stage, ExplainsPolicy)
    }


def rules_that(stages: Iterable[Any], action: Action) -> list[str]:
    """The ids of the rules that take ``action`` (or that a user may set to take it), each
    once."""
    found: dict[str, None] = {}
    for stage in stages:
        if isinstance(stage, DeclaresRules):
            found.update(dict.fromkeys(stage.rules_that(action)))
    return list(found)


async def close_all(parts: Iterable[object]) -> None:
    """``aclose()`` each part that has one, in order; one failing is logged
    (``middleware.close_failed``) and the rest are still closed."""
    for part in parts:
        aclose = getattr(part, "aclose", None)
        if aclose is None:
            continue
        try:
            await aclose()
        except Exception as exc:  # one part failing to close must not leave the rest open
            _log.error(
                "middleware.close_failed",
                part=getattr(part, "name", type(part).__name__),
                error=repr(exc),
            )
