"""Auth and roles: every role x endpoint x own/other user, keys, and the profile API's rules."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from persona_mw_server import ServerConfig, check_bind, create_app, hash_key
from persona_mw_server.config import ApiKey, ServerSettings
from persona_mw_server.keys import find_key
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS, bearer

from persona_mw import CallContext, ConfigError, Middleware, Profile

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "user": "ada"}
PATCH = {"style": {"tone": "direct"}}

NONE, BAD = "", "pmw-not-a-configured-key"
# (key, method, path, json body, expected status)
MATRIX: list[tuple[str, str, str, Any, int]] = [
    *[
        (k, m, p, b, 401)
        for k in (NONE, BAD)
        for m, p, b in [
            ("POST", "/v1/chat/completions", CHAT),
            ("GET", "/v1/models", None),
            ("GET", "/v1/users/ada/profile", None),
            ("GET", "/v1/policy", None),
            ("DELETE", "/v1/users/ada", None),
        ]
    ],
    (KEYS.app, "POST", "/v1/chat/completions", CHAT, 200),
    (KEYS.app, "GET", "/v1/models", None, 200),
    (KEYS.app, "GET", "/v1/policy", None, 200),
    (KEYS.app, "GET", "/v1/users/ada/profile", None, 403),
    (KEYS.app, "PATCH", "/v1/users/ada/profile", PATCH, 403),
    (KEYS.app, "PUT", "/v1/users/ada/profile", PATCH, 403),
    (KEYS.app, "DELETE", "/v1/users/ada/profile", None, 403),
    (KEYS.app, "GET", "/v1/users/ada/usage", None, 403),
    (KEYS.app, "DELETE", "/v1/users/ada", None, 403),
    (KEYS.ada, "POST", "/v1/chat/completions", CHAT, 403),
    (KEYS.ada, "GET", "/v1/models", None, 200),
    (KEYS.ada, "GET", "/v1/policy", None, 200),
    (KEYS.ada, "GET", "/v1/policy?user=ada", None, 200),
    (KEYS.ada, "GET", "/v1/policy?user=bob", None, 403),
    (KEYS.ada, "GET", "/v1/users/ada/profile", None, 200),
    (KEYS.ada, "GET", "/v1/users/bob/profile", None, 403),
    (KEYS.ada, "PATCH", "/v1/users/ada/profile", PATCH, 200),
    (KEYS.ada, "PATCH", "/v1/users/bob/profile", PATCH, 403),
    (KEYS.ada, "PUT", "/v1/users/ada/profile", PATCH, 200),
    (KEYS.ada, "PUT", "/v1/users/bob/profile", PATCH, 403),
    (KEYS.ada, "DELETE", "/v1/users/ada/profile", None, 200),
    (KEYS.ada, "DELETE", "/v1/users/bob/profile", None, 403),
    (KEYS.ada, "GET", "/v1/users/ada/usage", None, 200),
    (KEYS.ada, "GET", "/v1/users/bob/usage", None, 403),
    (KEYS.ada, "DELETE", "/v1/users/ada", None, 200),
    (KEYS.ada, "DELETE", "/v1/users/bob", None, 403),
    *[
        (KEYS.admin, m, p, b, 200)
        for m, p, b in [
            ("POST", "/v1/chat/completions", CHAT),
            ("GET", "/v1/models", None),
            ("GET", "/v1/policy?user=bob", None),
            ("GET", "/v1/users/bob/profile", None),
            ("PATCH", "/v1/users/bob/profile", PATCH),
            ("PUT", "/v1/users/bob/profile", PATCH),
            ("DELETE", "/v1/users/bob/profile", None),
            ("GET", "/v1/users/bob/usage", None),
            ("DELETE", "/v1/users/bob", None),
        ]
    ],
    *[(NONE, "GET", p, None, 200) for p in ("/healthz", "/readyz", "/metrics", "/openapi.json")],
]


def _name(case: tuple[str, str, str, Any, int]) -> str:
    key = {
        NONE: "nokey",
        BAD: "badkey",
        KEYS.app: "app",
        KEYS.ada: "user-ada",
        KEYS.admin: "admin",
    }[case[0]]
    return f"{key}-{case[1]}-{case[2]}"


@pytest.mark.parametrize("case", MATRIX, ids=[_name(c) for c in MATRIX])
def test_role_matrix(server: ServerThread, case: tuple[str, str, str, Any, int]) -> None:
    key, method, path, body, expected = case
    response = httpx.request(
        method, server.base_url + path, json=body, headers=bearer(key) if key else {}
    )
    assert response.status_code == expected, response.text
    if expected >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["type"] == {401: "authentication_error", 403: "permission_error"}[expected]


def test_key_hash_and_lookup() -> None:
    entries = [(hash_key("k1"), "one"), (hash_key("k2"), "two")]
    assert hash_key("k1").startswith("sha256:") and len(hash_key("k1")) == 7 + 64
    assert [find_key(k, entries) for k in ("k1", "k2", "k3", "", " k1")] == [
        "one",
        "two",
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("host", "keys", "allowed"),
    [
        ("127.0.0.1", False, True),
        ("localhost", False, True),
        ("::1", False, True),
        ("0.0.0.0", False, False),
        ("10.1.2.3", False, False),
        ("example.org", False, False),
        ("0.0.0.0", True, True),
    ],
)
def test_no_keys_means_loopback_only(host: str, keys: bool, allowed: bool) -> None:
    settings = ServerSettings(
        api_keys=(ApiKey(name="a", role="app", key_hash=hash_key("k")),) if keys else ()
    )
    config = ServerConfig(server=settings)
    if allowed:
        check_bind(host, config)
    else:
        with pytest.raises(ConfigError, match="without API keys"):
            check_bind(host, config)


def test_user_key_cannot_change_deployer_fields(server: ServerThread) -> None:
    """Tier 3 only narrows: a user cannot declare themselves adult to drop minor protections."""
    admin, ada = bearer(KEYS.admin), bearer(KEYS.ada)
    url = server.base_url + "/v1/users/carol-minor/profile"
    assert httpx.put(url, json={"age_band": "13_15"}, headers=admin).status_code == 200
    ada_url = server.base_url + "/v1/users/ada/profile"
    for change in ({"age_band": "18_plus"}, {"known_minor": True}):
        response = httpx.patch(ada_url, json=change, headers=ada)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "deployer_field"
    assert httpx.get(url, headers=admin).json()["known_minor"] is True
    assert (
        httpx.patch(ada_url, json={"style": {"verbosity": "terse"}}, headers=ada).status_code == 200
    )


def test_profile_merge_patch_etag_and_if_match(server: ServerThread) -> None:
    h = bearer(KEYS.admin)
    url = server.base_url + "/v1/users/dora/profile"
    httpx.delete(url, headers=h)
    fresh = httpx.get(url, headers=h)
    assert (
        fresh.status_code == 200 and fresh.json()["version"] == 0 and fresh.headers["etag"] == '"0"'
    )
    first = httpx.patch(url, json={"style": {"tone": "formal", "verbosity": "brief"}}, headers=h)
    assert first.json()["version"] == 1 and first.headers["etag"] == '"1"'
    second = httpx.patch(
        url,
        json={"style": {"tone": None}, "topics_to_avoid": ["football"]},
        headers={**h, "If-Match": '"1"', "Content-Type": "application/merge-patch+json"},
    )
    assert second.status_code == 200, second.text
    assert second.json()["style"] == {**first.json()["style"], "tone": None, "verbosity": "brief"}
    assert second.json()["topics_to_avoid"] == ["football"]
    stale = httpx.patch(url, json={"style": {"tone": "playful"}}, headers={**h, "If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "profile_changed"
    replaced = httpx.put(url, json={"own_rules": "be brief"}, headers={**h, "If-Match": '"2"'})
    assert replaced.status_code == 200 and replaced.json()["topics_to_avoid"] == []


@pytest.mark.parametrize(
    ("method", "body", "param"),
    [
        ("PATCH", {"style": {"tone": "sarcastic"}}, "style.tone"),
        ("PUT", {"favourite_colour": "red"}, "favourite_colour"),
        ("PUT", {"user_id": "someone-else"}, "user_id"),
        ("PATCH", ["not", "an", "object"], None),
    ],
)
def test_invalid_profiles_are_400_naming_the_field(
    server: ServerThread, method: str, body: Any, param: str | None
) -> None:
    response = httpx.request(
        method, server.base_url + "/v1/users/erin/profile", json=body, headers=bearer(KEYS.admin)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_erase_removes_the_profile(server: ServerThread) -> None:
    h = bearer(KEYS.admin)
    httpx.patch(server.base_url + "/v1/users/fay/profile", json={"own_rules": "x"}, headers=h)
    erased = httpx.delete(server.base_url + "/v1/users/fay", headers=h).json()
    assert erased["user"] == "fay" and erased["erased"]["profile"] is True
    # the usage recorder erased too (nothing recorded yet)
    assert erased["erased"]["usage"] == {"events": 0, "rollup_days": 0}
    assert httpx.get(server.base_url + "/v1/users/fay/profile", headers=h).json()["version"] == 0


def test_policy_cannot_be_written(server: ServerThread) -> None:
    """Tier 1 (and 2) come from the deployment's config; no endpoint writes them."""
    for method in ("PUT", "PATCH", "POST", "DELETE"):
        response = httpx.request(
            method, server.base_url + "/v1/policy", json={}, headers=bearer(KEYS.admin)
        )
        assert response.status_code == 405 and "error" in response.json()
    assert set(
        httpx.get(server.base_url + "/v1/policy", headers=bearer(KEYS.admin)).json()["tiers"]
    ) == {"1", "2", "3"}


class Counts:
    """A stage that keeps per-user data, reports it and explains itself: it implements
    ReportsUsage, HoldsUserData and ExplainsPolicy, and nothing server-specific."""

    name = "counts"

    def __init__(self) -> None:
        self.messages = {"gus": 3}

    async def __call__(self, ctx: CallContext) -> None:
        return None

    async def usage_report(self, user_id: str) -> dict[str, Any]:
        return {"messages": self.messages.get(user_id, 0)}

    async def erase(self, user_id: str) -> int:
        return self.messages.pop(user_id, 0)

    def explain(self, profile: Profile) -> dict[str, Any]:
        return {"tier": 3, "daily_cap_minutes": profile.limits.daily_cap_minutes}


def test_usage_erase_and_policy_come_from_the_stages() -> None:
    """The endpoints show what the middleware's stages report, keyed by stage name, once each
    (the stage is both an input and a finish stage here); the policy is explained for the
    user's own profile."""
    counts = Counts()
    mw = Middleware(input_stages=[counts], finish_stages=[counts])
    with ServerThread(create_app(ServerConfig(), middleware=mw)) as server:
        limits = {"limits": {"daily_cap_minutes": 30}}
        httpx.patch(server.base_url + "/v1/users/gus/profile", json=limits).raise_for_status()
        usage = httpx.get(server.base_url + "/v1/users/gus/usage").json()
        assert usage["usage"] == {"counts": {"messages": 3}} and usage["recording"] is True
        assert usage["limits"]["daily_cap_minutes"] == 30
        policy = httpx.get(server.base_url + "/v1/policy?user=gus").json()
        assert policy["explained"] == {"counts": {"tier": 3, "daily_cap_minutes": 30}}
        anyone = httpx.get(server.base_url + "/v1/policy").json()
        assert anyone["explained"] == {"counts": {"tier": 3, "daily_cap_minutes": None}}
        assert policy["stages"] == {"input": ["counts"], "output": [], "finish": ["counts"]}
        erased = httpx.delete(server.base_url + "/v1/users/gus").json()
        assert erased == {"user": "gus", "erased": {"profile": True, "counts": 3}}
        after = httpx.get(server.base_url + "/v1/users/gus/usage").json()
        assert after["usage"] == {"counts": {"messages": 0}}


def test_usage_without_reporting_stages_says_not_recording() -> None:
    with ServerThread(create_app(ServerConfig(), middleware=Middleware())) as server:
        usage = httpx.get(server.base_url + "/v1/users/hal/usage").json()
        assert usage["usage"] is None and usage["recording"] is False
        assert httpx.get(server.base_url + "/v1/policy").json()["explained"] == {}


def test_embedded_defaults_report_usage_explain_bounds_and_erase_everything(
    open_server: ServerThread,
) -> None:
    """The fully wired server: a user's calls show up in their usage (from the usage store, as
    the recorder wrote it), the bounds explain themselves per user, and erasure removes the
    usage and the dependence stage's due-state."""
    url = open_server.base_url
    body = {"model": "persona-demo/offline", "user": "ivy"}
    for text in ("hello", "and again"):
        message = {"messages": [{"role": "user", "content": text}]}
        httpx.post(url + "/v1/chat/completions", json={**body, **message}).raise_for_status()
    deadline = time.monotonic() + 10
    while True:  # the recorder writes in the background, in small batches
        usage = httpx.get(url + "/v1/users/ivy/usage").json()
        if usage["usage"]["dependence"]["events"] == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert usage["recording"] is True
    report = usage["usage"]["dependence"]
    assert report["events"] == 4  # two user messages, two replies
    assert report["signals"]["messages_today"] == 2
    assert len(report["signals"]["history"]) == 28
    # the embedded policy discloses "not a human" once a day to everyone: the due-state is kept
    assert set(report["actions_last_taken"]) == {"ai_disclosure"}

    adult = httpx.get(url + "/v1/policy?user=ivy").json()["explained"]["bounds"]
    rules = {r["id"]: r for r in adult["rules"]}
    assert rules and all(r["tier"] in (1, 2, 3) for r in rules.values())
    assert any(r["tier"] == 1 for r in rules.values())
    minor = {"age_band": "13_15"}
    httpx.patch(url + "/v1/users/kit/profile", json=minor).raise_for_status()
    for_minor = httpx.get(url + "/v1/policy?user=kit").json()["explained"]["bounds"]
    assert {r["id"] for r in for_minor["rules"]} != set(rules)  # minors' protections differ

    erased = httpx.delete(url + "/v1/users/ivy").json()["erased"]
    assert erased["usage"] == {"events": 4, "rollup_days": 0}  # within the reorder window
    after = httpx.get(url + "/v1/users/ivy/usage").json()["usage"]["dependence"]
    assert after["events"] == 0 and after["actions_last_taken"] == {}
