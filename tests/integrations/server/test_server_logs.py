"""The server's log events, over real HTTP: ``request.completed`` carries the HTTP status and
the API key's name (never the key); every refused request leaves one ``request.rejected`` event
with its status and reason."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import openai
import pytest
import structlog
from persona_mw_server import create_app
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS

from persona_mw import CallContext, Middleware, Profile
from persona_mw.testing import FakeOpenAIServer, Fault

Events = list[MutableMapping[str, Any]]


@pytest.fixture
def events() -> Iterator[Events]:
    """Every event as the server's own configuration would see it: with the request's
    context variables merged in (how the key's name reaches the library's events)."""
    capture = structlog.testing.LogCapture()
    before = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(**before)


def named(events: Events, name: str) -> Events:
    return [e for e in events if e["event"] == name]


def client(server: ServerThread, key: str = KEYS.app) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def test_request_completed_has_the_status_and_the_key_name(
    server: ServerThread, events: Events
) -> None:
    client(server).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hi"}], user="grace"
    )
    [done] = named(events, "request.completed")
    assert done["http_status"] == 200 and done["api_key"] == "app"
    assert KEYS.app not in json.dumps(done, default=str)
    # "grace": letters the hashed id and the request id (hex) cannot hold by chance; "ada" was
    # in one of them about once in eighty runs
    assert "grace" not in json.dumps(done, default=str), "the user id is hashed"


def test_an_upstream_failure_is_logged_with_the_status_it_answers(
    server: ServerThread, upstream: FakeOpenAIServer, events: Events
) -> None:
    upstream.inject(Fault(status=500, times=10))
    try:
        with pytest.raises(openai.APIStatusError) as raised:
            client(server).chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "hi"}], user="ada"
            )
    finally:
        upstream.clear_faults()
    [done] = named(events, "request.completed")
    assert done["outcome"] == "error" and done["http_status"] == raised.value.status_code == 502


@pytest.mark.parametrize(
    ("send", "status", "reason"),
    [
        ({"headers": {"authorization": ""}}, 401, "missing API key"),
        ({"headers": {"authorization": "Bearer nope"}}, 401, "invalid API key"),
        (
            {"json": {"model": "fake", "messages": [{"role": "user", "content": "x"}]}},
            400,
            "end-user",
        ),
        ({"json": {"model": "fake"}}, 400, "messages"),
        (
            {
                "json": {
                    "model": "nope",
                    "messages": [{"role": "user", "content": "x"}],
                    "user": "a",
                }
            },
            404,
            "not served",
        ),
        ({"content": b"x" * 3_000_000}, 413, "larger than"),
    ],
    ids=["no-key", "bad-key", "no-user", "invalid-body", "unknown-model", "too-large"],
)
def test_every_refused_request_leaves_one_event(
    server: ServerThread, events: Events, send: dict[str, Any], status: int, reason: str
) -> None:
    headers = {"authorization": f"Bearer {KEYS.app}", **send.pop("headers", {})}
    if not send:
        send = {"json": {"model": "fake", "messages": [{"role": "user", "content": "x"}]}}
    answer = httpx.post(server.base_url + "/v1/chat/completions", headers=headers, **send)
    assert answer.status_code == status, answer.text
    [rejected] = named(events, "request.rejected")
    assert rejected["status"] == status and reason in rejected["reason"]


def test_a_refusal_about_a_user_names_no_user_id(server: ServerThread, events: Events) -> None:
    answer = httpx.get(
        server.base_url + "/v1/users/grace-hopper/profile",
        headers={"authorization": f"Bearer {KEYS.ada}"},
    )
    assert answer.status_code == 403
    [rejected] = named(events, "request.rejected")
    assert rejected["path"] == "/v1/users/{user_id}/profile"
    assert "grace-hopper" not in json.dumps(rejected)


class _ExplainingStage:
    """An input stage that can explain its rules (``ExplainsPolicy``), noting each profile."""

    name = "explaining"

    def __init__(self) -> None:
        self.asked: list[Profile] = []

    async def __call__(self, ctx: CallContext) -> None:
        return None

    def explain(self, profile: Profile) -> dict[str, Any]:
        self.asked.append(profile)
        return {}


def test_start_up_resolves_the_rules_of_the_default_profile(events: Events) -> None:
    """The bounds compile their scanners when a profile's rules are first resolved (~0.3 s with
    every built-in pack): the server does it for the default profile, which every new user
    has, before it answers anything, and says how long it took."""
    stage = _ExplainingStage()
    mw = Middleware(input_stages=[stage])
    with ServerThread(create_app(middleware=mw)):
        assert stage.asked == [mw.default_profile("(start-up)")]
    [started] = named(events, "server.started")
    assert started["warm_ms"] >= 0
