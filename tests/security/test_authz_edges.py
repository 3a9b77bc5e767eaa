"""What the server's role matrix (tests/integrations/server/test_server_auth.py, every role x
endpoint x own/other user) does not cover: user ids that try to escape their own (encoding,
traversal, case, look-alikes), key confusion (wrong scheme, hashes as keys, keys in the wrong
place, duplicate headers), and a user key trying every way to shed the deployer-owned fields
(age band, known minor) that decide the minor protections.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from persona_mw_server import create_app, hash_key, load_server_config
from persona_mw_server.testing import ServerThread
from sec_helpers import KEYS, bearer, write_server_config

from persona_mw.testing import FakeOpenAIServer

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "user": "ada"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with FakeOpenAIServer() as upstream:
        path = write_server_config(
            tmp_path_factory.mktemp("authz") / "persona.yaml", upstream.base_url
        )
        with ServerThread(create_app(load_server_config(path))) as running:
            yield running


def _raw(
    server: ServerThread, method: str, raw_path: str, key: str, **kw: object
) -> httpx.Response:
    """Send ``raw_path`` exactly as written (httpx would otherwise normalise dot segments)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        request = client.build_request(method, server.base_url, headers=bearer(key), **kw)  # type: ignore[arg-type]
        request.url = request.url.copy_with(raw_path=raw_path.encode())
        return client.send(request)


@pytest.fixture
def bob_profile(server: ServerThread) -> Iterator[dict[str, object]]:
    """Bob's stored profile; each test checks it is untouched afterwards."""
    url = server.base_url + "/v1/users/bob/profile"
    created = httpx.put(url, json={"own_rules": "bob's own rules"}, headers=bearer(KEYS.admin))
    assert created.status_code == 200
    yield created.json()
    assert httpx.get(url, headers=bearer(KEYS.admin)).json() == created.json(), "bob was changed"


ESCAPES = [
    "/v1/users/ada%2F..%2Fbob/profile",
    "/v1/users/ada/../bob/profile",
    "/v1/users/..%2Fbob/profile",
    "/v1/users/%2E%2E/bob/profile",
    "/v1/users/bob%00ada/profile",
    "/v1/users/ada%00/profile",
    "/v1/users/Ada/profile",
    "/v1/users/ADA/profile",
    "/v1/users/ada%20/profile",
    "/v1/users/%20ada/profile",
    "/v1/users/%D0%B0da/profile",  # Cyrillic "а" + "da"
    "/v1/users/ada%E2%80%8B/profile",  # zero-width space
    "/v1/users/ada;bob/profile",
    "/v1/users/ada%3Bbob/profile",
    "/v1/users/bob/profile?user_id=ada",
    "/v1/users/*/profile",
    "/v1/users/%2A/profile",
]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("raw_path", ESCAPES)
def test_a_user_key_never_reaches_another_users_data(
    server: ServerThread, bob_profile: dict[str, object], raw_path: str, method: str
) -> None:
    """Every spelling that is not exactly "ada" is another user (403) or no route (404)."""
    kw = {"json": {"own_rules": "pwned"}} if method == "PATCH" else {}
    response = _raw(server, method, raw_path, KEYS.ada, **kw)
    assert response.status_code in (403, 404), (raw_path, response.status_code, response.text)
    assert "error" in response.json()


@pytest.mark.parametrize(
    "raw_path", ["/v1/users/ada/usage", "/v1/users/ada%2F..%2Fbob", "/v1/users/ada/../bob"]
)
def test_erasure_cannot_be_pointed_at_another_user(
    server: ServerThread, bob_profile: dict[str, object], raw_path: str
) -> None:
    response = _raw(server, "DELETE", raw_path, KEYS.ada)
    assert response.status_code in (403, 404, 405), (raw_path, response.text)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Basic {KEYS.admin}"}, 401),
        ({"Authorization": f"bearer {KEYS.admin}"}, 200),  # the scheme is case-insensitive
        ({"Authorization": f"Bearer  {KEYS.admin}"}, 200),  # extra spaces are only spacing
        ({"Authorization": f"Bearer {KEYS.admin[:-1]}"}, 401),
        ({"Authorization": f"Bearer {KEYS.admin}x"}, 401),
        ({"Authorization": f"Bearer {hash_key(KEYS.admin)}"}, 401),  # the hash is not a key
        ({"Authorization": f"Bearer {hash_key(KEYS.admin).split(':', 1)[1]}"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"X-Api-Key": KEYS.admin}, 401),
        ({"Api-Key": KEYS.admin}, 401),
        ({"X-Persona-User": KEYS.admin}, 401),
        ({"Cookie": f"Authorization=Bearer {KEYS.admin}"}, 401),
    ],
)
def test_key_confusion(server: ServerThread, headers: dict[str, str], status: int) -> None:
    response = httpx.get(server.base_url + "/v1/users/bob/profile", headers=headers)
    assert response.status_code == status, response.text


def test_key_in_the_query_string_is_not_a_key(server: ServerThread) -> None:
    response = httpx.get(
        server.base_url + "/v1/users/bob/profile", params={"api_key": KEYS.admin, "key": KEYS.admin}
    )
    assert response.status_code == 401


def test_two_authorization_headers_do_not_add_up(server: ServerThread) -> None:
    """A user key followed by an admin key (or the reverse) is never treated as admin."""
    for first, second in ((KEYS.ada, KEYS.admin), ("pmw-wrong", KEYS.admin)):
        headers = [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        response = httpx.get(server.base_url + "/v1/users/bob/profile", headers=headers)
        assert response.status_code in (400, 401, 403), response.text


def test_app_key_cannot_impersonate_an_admin_through_headers(server: ServerThread) -> None:
    headers = {**bearer(KEYS.app), "X-Persona-User": "admin", "X-Persona-Role": "admin"}
    assert httpx.get(server.base_url + "/v1/users/ada/profile", headers=headers).status_code == 403
    assert httpx.delete(server.base_url + "/v1/users/bob", headers=headers).status_code == 403


def test_user_key_cannot_call_completions_for_itself_or_others(server: ServerThread) -> None:
    for user_header in ("ada", "bob", None):
        headers = {**bearer(KEYS.ada), **({"X-Persona-User": user_header} if user_header else {})}
        response = httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 403


# -- deployer-owned fields ---------------------------------------------------------------------


@pytest.fixture
def ada_minor(server: ServerThread) -> Iterator[str]:
    """Ada, whom the deployer (admin key) knows to be 14."""
    url = server.base_url + "/v1/users/ada/profile"
    assert httpx.put(url, json={"age_band": "13_15"}, headers=bearer(KEYS.admin)).status_code == 200
    yield url
    httpx.delete(url, headers=bearer(KEYS.admin))


def _ada(url: str) -> dict[str, object]:
    return httpx.get(url, headers=bearer(KEYS.admin)).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PATCH", {"known_minor": False}),
        ("PATCH", {"known_minor": None}),
        ("PATCH", {"age_band": None}),
        ("PATCH", {"age_band": "18_plus"}),
        ("PATCH", {"age_band": "unknown", "known_minor": False}),
        ("PUT", {"style": {"tone": "direct"}}),  # a replace that leaves them out resets them
        ("PUT", {"age_band": "18_plus", "known_minor": False}),
        ("PATCH", {"Known_Minor": False}),
        ("PATCH", {"known_minor ": False}),
    ],
)
def test_user_key_cannot_shed_minor_protections(
    server: ServerThread, ada_minor: str, method: str, body: dict[str, object]
) -> None:
    """Refused, or a no-op (a minor age band implies known_minor): never a change."""
    response = httpx.request(method, ada_minor, json=body, headers=bearer(KEYS.ada))
    assert response.status_code in (200, 400, 403), response.text
    after = _ada(ada_minor)
    assert (after["age_band"], after["known_minor"]) == ("13_15", True)


def test_user_key_delete_keeps_the_deployer_fields(server: ServerThread, ada_minor: str) -> None:
    assert httpx.delete(ada_minor, headers=bearer(KEYS.ada)).status_code in (200, 403)
    after = _ada(ada_minor)
    assert (after["age_band"], after["known_minor"]) == ("13_15", True)


def test_admin_can_still_set_and_clear_the_deployer_fields(
    server: ServerThread, ada_minor: str
) -> None:
    cleared = httpx.patch(ada_minor, json={"age_band": "18_plus"}, headers=bearer(KEYS.admin))
    assert cleared.status_code == 200 and cleared.json()["age_band"] == "18_plus"


def test_policy_explanation_for_another_user_is_refused(server: ServerThread) -> None:
    for query in ("bob", "ada%2F..%2Fbob", "Ada"):
        response = httpx.get(server.base_url + f"/v1/policy?user={query}", headers=bearer(KEYS.ada))
        assert response.status_code == 403, (query, response.text)


def test_server_config_dir_is_not_served(server: ServerThread) -> None:
    """No static files: paths that would read the config or the key hashes are 404."""
    for path in ("/persona.yaml", "/../persona.yaml", "/static/../../etc/passwd", "/.env"):
        response = httpx.get(server.base_url + path, headers=bearer(KEYS.admin))
        assert response.status_code == 404, path
    assert "key_hash" not in httpx.get(server.base_url + "/openapi.json").text
