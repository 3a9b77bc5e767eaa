"""No raw user id, PII or message text in the logs by default.

A scripted session — plain and streamed completions, a crisis message, PII in the prompt and in
the reply, an upstream failure, a timeout, profile writes with personal text, a bad profile,
usage, erasure — runs with recognisable canaries in the user id, the messages and the profile.
Then every captured line is scanned: all structlog events (as dicts, every key and value) and all
stdlib ``logging`` records at INFO and above (LiteLLM, httpx, uvicorn, redis...), in-process
through the Middleware and the server; and the stderr of a real ``persona-mw serve`` process
with its default logging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerProcess, ServerThread
from sec_helpers import KEYS, bearer, write_server_config

from persona_mw import Middleware, Profile, Settings
from persona_mw.bounds import BoundsConfig, bounds_stages
from persona_mw.personalise import PersonaliseStage
from persona_mw.signals.recorder import UsageRecorder
from persona_mw.signals.usage_store import MemoryUsageStore
from persona_mw.testing import FakeOpenAIServer, Fault, capture_logs

USER = "canary.user+7f3a@example.com"
MSG = "CANARYMSG91c2"
PHONE = "+44 7700 900123"
EMAIL = "zed.canary@example.org"
RULES = "CANARYRULES55aa"
SELF = "CANARYSELF0b1d"
CANARIES = [USER, "canary.user", MSG, PHONE, "7700 900123", EMAIL, RULES, SELF]

POLICY = str(Path(__file__).parents[2] / "examples/policies/customer-support.yaml")


def _reply(request: dict[str, Any]) -> str:
    # the model "leaks" PII and echoes the message: the logs must still not carry them
    return f"Sure. Reach {EMAIL} or {PHONE}. You said: {request['messages'][-1]['content']}"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=_reply) as server:
        yield server


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.__dict__!r}")


@pytest.fixture
def stdlib_logs() -> Iterator[_Records]:
    """Every stdlib record at INFO+, from any logger (root at INFO, as a deployment runs)."""
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def _scan(lines: list[str]) -> list[tuple[str, str]]:
    return [(c, line[:300]) for line in lines for c in CANARIES if c.lower() in line.lower()]


def _messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


SCRIPT = [
    f"hello, {MSG}",
    f"my phone is {PHONE} and my mail {EMAIL}, {MSG}",
    f"{MSG}: I want to end my life",
]


async def test_middleware_session_logs_no_personal_data(
    upstream: FakeOpenAIServer, stdlib_logs: _Records
) -> None:
    check_input, check_output = bounds_stages(BoundsConfig(policies=(POLICY,)))
    mw = Middleware(
        input_stages=[check_input, PersonaliseStage()],
        output_stages=[check_output],
        finish_stages=[UsageRecorder(MemoryUsageStore())],
        settings=Settings(hash_secret="privacy-test"),
    )
    kw = {"api_base": upstream.base_url, "api_key": "x", "num_retries": 0, "max_retries": 0}
    with capture_logs() as events:
        await mw.store.put(
            Profile(
                user_id=USER,
                own_rules=RULES,
                self_description=SELF,
                consent={"personalisation": True, "text_analysis": True},
            )
        )
        for text in SCRIPT:
            await mw.acompletion(user=USER, model="openai/fake", messages=_messages(text), **kw)
            async for _ in mw.astream(
                user=USER, model="openai/fake", messages=_messages(text), **kw
            ):
                pass
        for fault in (Fault(status=500), Fault(delay=0.6)):
            upstream.inject(fault)
            with pytest.raises(Exception, match="openai/fake"):
                await mw.acompletion(
                    user=USER, model="openai/fake", messages=_messages(MSG), timeout=0.3, **kw
                )
        await mw.usage_report(USER)
        await mw.erase_user(USER)
        await mw.aclose()
    lines = [repr(dict(e)) for e in events] + stdlib_logs.lines
    assert sum(e["event"] == "request.completed" for e in events) == 2 * len(SCRIPT) + 2
    assert any(e["event"] == "user.erased" for e in events)
    assert _scan(lines) == []


def test_server_session_logs_no_personal_data(
    upstream: FakeOpenAIServer, stdlib_logs: _Records, tmp_path: Path
) -> None:
    path = write_server_config(
        tmp_path / "persona.yaml",
        upstream.base_url,
        bounds={"policies": [POLICY]},
        settings={"hash_secret": "privacy-test"},
    )
    with capture_logs() as events, ServerThread(create_app(load_server_config(path))) as server:
        _server_script(server.base_url)
    lines = [repr(dict(e)) for e in events] + stdlib_logs.lines
    assert any(e["event"] == "request.completed" for e in events)
    assert _scan(lines) == []


def _server_script(base_url: str) -> None:
    admin, app = bearer(KEYS.admin), bearer(KEYS.app)
    quoted = httpx.URL(base_url + "/v1/users/").join(USER.replace("+", "%2B")).path
    profile_url = base_url + quoted + "/profile"
    with httpx.Client(timeout=10) as client:
        assert (
            client.put(
                profile_url,
                json={"own_rules": RULES, "self_description": SELF, "consent": {"memory": True}},
                headers=admin,
            ).status_code
            == 200
        )
        bad = client.patch(profile_url, json={"style": {"tone": MSG}}, headers=admin)
        assert bad.status_code == 400
        for text in SCRIPT:
            for stream in (False, True):
                response = client.post(
                    base_url + "/v1/chat/completions",
                    json={"model": "fake", "messages": _messages(text), "stream": stream},
                    headers={**app, "X-Persona-User": USER},
                )
                assert response.status_code == 200, response.text
        missing = client.post(
            base_url + "/v1/chat/completions",
            json={"model": f"no-such-{MSG}", "messages": _messages(MSG), "user": USER},
            headers=app,
        )
        assert missing.status_code == 404
        assert client.get(base_url + quoted + "/usage", headers=admin).status_code == 200
        assert client.get(base_url + f"/v1/policy?user={USER}", headers=admin).status_code == 200
        assert client.delete(base_url + quoted, headers=admin).status_code == 200


def test_persona_mw_serve_default_log_has_no_personal_data(
    upstream: FakeOpenAIServer, tmp_path: Path
) -> None:
    """The real CLI process with its default logging (JSON lines on stderr)."""
    path = write_server_config(
        tmp_path / "persona.yaml", upstream.base_url, bounds={"policies": [POLICY]}
    )
    log = tmp_path / "serve.log"
    with ServerProcess(path, log_path=log, env={"PERSONA_MW_HASH_SECRET": "x"}) as server:
        _server_script(server.base_url)
    lines = log.read_text().splitlines()
    assert any('"request.completed"' in line for line in lines), lines[:5]
    assert _scan(lines) == []


async def test_the_scan_does_find_text_when_an_operator_turns_it_on(
    upstream: FakeOpenAIServer,
) -> None:
    """The control: with ``log_message_text`` on, the same scan finds the message canary."""
    mw = Middleware(settings=Settings(hash_secret="privacy-test", log_message_text=True))
    with capture_logs() as events:
        await mw.acompletion(
            user=USER,
            model="openai/fake",
            messages=_messages(SCRIPT[0]),
            api_base=upstream.base_url,
            api_key="x",
        )
    found = {canary for canary, _ in _scan([repr(dict(e)) for e in events])}
    assert MSG in found and USER not in found
