"""The user routes: a user's tier-3 profile (read, replace, merge-patch, delete), their usage,
erasure of everything stored about them, and the effective policy explained.

Tiers 1 and 2 live in the deployment's config and no endpoint writes them; a user key may change
only its own profile and never the deployer-owned fields (minor status). Usage, erasure and the
explanation come from the middleware's public methods
(:meth:`~persona_mw.Middleware.usage_report`, :meth:`~persona_mw.Middleware.erase_user`,
:meth:`~persona_mw.Middleware.explain_policy`), never from its stages directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from persona_mw import (
    Middleware,
    Profile,
    ProfileConflictError,
    merge_patch,
    parse_profile,
    update_profile,
)
from persona_mw.bounds import BoundsInputStage

from ..auth import DEPLOYER_FIELDS, Principal, deployer_fields_changed
from ..deps import ERRORS, PROFILE_WRITE_ERRORS, ServerState, State, Who, allow
from ..errors import ApiError

__all__ = ["router"]

router = APIRouter()

_IF_MATCH = "the ETag you read; 412 if it changed"
_PROFILE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Profile"}}},
    }
}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/merge-patch+json": {
                "schema": {
                    "type": "object",
                    "description": "RFC 7396 merge patch of the Profile; null removes a field",
                }
            }
        },
    }
}


@router.get("/v1/users/{user_id}/profile", response_model=Profile, responses=ERRORS, tags=["users"])
async def get_profile(user_id: str, who: Who, state: State) -> Response:
    """The user's tier-3 profile (the default one when nothing is stored; version 0).
    The ETag is the profile version: send it back in If-Match to update safely."""
    allow(who, "read_profile", user_id)
    profile = await state.mw.store.get(user_id) or state.mw.default_profile(user_id)
    return _profile_response(profile)


@dataclass(frozen=True, slots=True)
class _ProfileWrite:
    """A permitted write of a user's profile: who asks, the JSON object they sent (without the
    fields the store and the URL own) and the ETag they read, if any."""

    user_id: str
    who: Principal
    state: ServerState
    body: dict[str, Any]
    if_match: str | None

    async def apply(self, make: Callable[[Profile], Profile]) -> Response:
        """Write ``make(current)`` (see :func:`_write`) and answer with the profile written."""
        return _profile_response(
            await _write(self.state, self.who, self.user_id, make, self.if_match)
        )


async def _profile_write(
    user_id: str,
    request: Request,
    who: Who,
    state: State,
    if_match: str | None = Header(default=None, description=_IF_MATCH),
) -> _ProfileWrite:
    """What PUT and PATCH share: the permission first, then the body."""
    allow(who, "write_profile", user_id)
    body = _strip_owned(await _json_object(request), user_id)
    return _ProfileWrite(user_id, who, state, body, if_match)


ProfileWrite = Annotated[_ProfileWrite, Depends(_profile_write)]
_WRITE_ROUTE: dict[str, Any] = {
    "response_model": Profile,
    "responses": PROFILE_WRITE_ERRORS,
    "tags": ["users"],
}


@router.put("/v1/users/{user_id}/profile", openapi_extra=_PROFILE_BODY, **_WRITE_ROUTE)
async def put_profile(write: ProfileWrite) -> Response:
    """Replace the user's profile."""

    def replace(current: Profile) -> Profile:
        # a user's replace that leaves the deployer's fields out keeps them
        user = write.who.role == "user"
        owned = {f: getattr(current, f) for f in DEPLOYER_FIELDS} if user else {}
        return parse_profile({**owned, **write.body}, user_id=write.user_id)

    return await write.apply(replace)


@router.patch("/v1/users/{user_id}/profile", openapi_extra=_PATCH_BODY, **_WRITE_ROUTE)
async def patch_profile(write: ProfileWrite) -> Response:
    """Change part of the user's profile (JSON Merge Patch, RFC 7396)."""

    def change(current: Profile) -> Profile:
        body = current.model_dump(mode="json", exclude={"version", "user_id"})
        return parse_profile(merge_patch(body, write.body), user_id=write.user_id)

    return await write.apply(change)


@router.delete("/v1/users/{user_id}/profile", responses=ERRORS, tags=["users"])
async def delete_profile(user_id: str, who: Who, state: State) -> dict[str, Any]:
    """Delete the user's stored profile (they get the default profile from now on). A user
    key keeps the deployer-owned fields (minor status), in the same atomic step."""
    allow(who, "write_profile", user_id)
    deleted = await state.mw.store.delete(user_id, keep=_kept(who))
    return {"user": user_id, "deleted": deleted}


@router.get("/v1/users/{user_id}/usage", responses=ERRORS, tags=["users"])
async def get_usage(user_id: str, who: Who, state: State) -> dict[str, Any]:
    """The user's self-set limits and, where stages report it, their usage by stage."""
    allow(who, "read_usage", user_id)
    profile, _ = await state.mw.load_profile(user_id)
    reports = _jsonable(await state.mw.usage_report(user_id))
    return {
        "user": user_id,
        "limits": profile.limits.model_dump(mode="json"),
        "usage": reports or None,
        "recording": bool(reports),
    }


@router.delete("/v1/users/{user_id}", responses=ERRORS, tags=["users"])
async def erase_user(user_id: str, who: Who, state: State) -> dict[str, Any]:
    """Erase everything stored about the user: profile and, where recorded, usage."""
    allow(who, "erase_user", user_id)
    erased = _jsonable(await state.mw.erase_user(user_id, keep=_kept(who)))
    return {"user": user_id, "erased": erased}


@router.get("/v1/policy", responses=ERRORS, tags=["policy"])
async def get_policy(
    who: Who,
    state: State,
    user: str | None = Query(
        default=None, description="explain the policy as it applies to this user"
    ),
) -> dict[str, Any]:
    """The effective policy, explained: the rules in force, their tier and why. Read-only:
    tier-1 and tier-2 rules come from the deployment's config and cannot be changed here."""
    allow(who, "read_policy", user)
    mw = state.mw
    profile = (await mw.load_profile(user))[0] if user else mw.default_profile("(any user)")
    settings = mw.settings
    return {
        "user": user,
        "tiers": {
            "1": "law and society: immutable; neither the deployer at run time nor users "
            "can change it",
            "2": "the deployer's policy (this server's config); users choose only inside "
            "ranges the deployer marks user-adjustable",
            "3": "the user's own profile: can only narrow what tiers 1 and 2 allow",
        },
        "stages": {
            "input": [s.name for s in mw.input_stages],
            "output": [s.name for s in mw.output_stages],
            "finish": [s.name for s in mw.finish_stages],
        },
        "explained": _jsonable(mw.explain_policy(profile)),
        "settings": {
            "on_store_error": settings.on_store_error,
            "log_message_text": settings.log_message_text,
            "profile_cache_ttl_s": settings.profile_cache_ttl_s,
        },
        "models": state.models,
    }


# -- helpers ------------------------------------------------------------------------------------


def _kept(who: Principal) -> tuple[str, ...]:
    """What a user key may not shed by deleting: the deployer-owned fields."""
    return DEPLOYER_FIELDS if who.role == "user" else ()


def _profile_response(profile: Profile) -> Response:
    return JSONResponse(profile.model_dump(mode="json"), headers={"ETag": f'"{profile.version}"'})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"null")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object (a profile, or a merge patch of one)")
    return data


def _strip_owned(data: dict[str, Any], user_id: str) -> dict[str, Any]:
    """``version`` belongs to the store and ``user_id`` to the URL; reject a different id."""
    if data.get("user_id") not in (None, user_id):
        raise ApiError(
            400,
            f"user_id in the body ({data['user_id']!r}) differs from the URL; leave it out",
            param="user_id",
        )
    return {k: v for k, v in data.items() if k not in ("version", "user_id")}


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ApiError(
            400,
            f'If-Match must be an ETag from GET (a quoted version such as "3"), not {value!r}',
            param="If-Match",
        )
    return int(tag)


def _profile_changed(message: str) -> ApiError:
    return ApiError(
        412, message, type="precondition_failed", code="profile_changed", param="If-Match"
    )


async def _write(
    state: ServerState,
    who: Principal,
    user_id: str,
    make: Callable[[Profile], Profile],
    if_match: str | None,
) -> Profile:
    expected = _parse_if_match(if_match)

    def change(current: Profile) -> Profile:
        if expected is not None and current.version != expected:
            raise _profile_changed(
                f"the profile is at version {current.version}, not {expected}: it "
                "changed since you read it; GET it again and reapply your change"
            )
        new = make(current)
        _check_profile_text(state.mw, current, new)
        if who.role == "user":
            changed = deployer_fields_changed(current, new)
            if changed:
                raise ApiError(
                    403,
                    f"{', '.join(changed)} can be set only by the deployer (an admin "
                    "key): they decide which protections apply",
                    type="permission_error",
                    code="deployer_field",
                    param=changed[0],
                )
        return new

    try:
        return await update_profile(
            state.mw.store,
            user_id,
            change,
            attempts=1 if expected is not None else 5,
            default=state.mw.default_profile,
        )
    except ProfileConflictError:
        if expected is not None:
            raise _profile_changed(
                "the profile changed while you were updating it; GET it again and "
                "reapply your change"
            ) from None
        raise


def _check_profile_text(mw: Middleware, current: Profile, new: Profile) -> None:
    """Profile text reaches the model in the system prompt: refuse what the input rules in
    force for this user would block or redact there (only in fields this write changes)."""
    for stage in mw.input_stages:
        if not isinstance(stage, BoundsInputStage):
            continue
        found = stage.check_profile_text(new, since=current)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise ApiError(
                422,
                found[0].describe() + more,
                code="profile_text_rule",
                param=found[0].field,
            )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return str(value)
