"""Compliance on the real server with the real openai client: the provenance marker (EU AI Act
Art. 50(2)) on every reply, and the trusted jurisdiction header for gateways."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS, bearer, model_entry, write_config

from persona_mw.testing import FakeOpenAIServer

MESSAGES = [{"role": "user", "content": "how do I sleep better?"}]
CRISIS = [{"role": "user", "content": "I think I want to end my life"}]


def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEYS.app, max_retries=0)


@pytest.fixture(scope="module")
def gateway_server(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """A server behind a gateway that sets X-Persona-Jurisdiction; EU law for every user."""
    path = write_config(
        tmp_path_factory.mktemp("gateway") / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        server={"api_keys": KEYS.config(), "trust_jurisdiction_header": True},
        bounds={"jurisdictions": ["eu-ai-act-art50"]},
    )
    with ServerThread(create_app(load_server_config(path))) as running:
        yield running


def test_a_reply_carries_the_marker_in_a_field_and_a_header(server: ServerThread) -> None:
    raw = client(server).chat.completions.with_raw_response.create(
        model="fake", messages=MESSAGES, user="ada"
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "echo: how do I sleep better?"
    marker = (reply.model_extra or {})["persona_provenance"]
    assert marker["ai_generated"] is True
    assert marker["model"] == "fake"
    assert marker["policy_version"] == "transport-tests"
    assert json.loads(raw.headers["x-persona-provenance"]) == marker


def test_a_stream_carries_the_marker_on_its_first_chunk_and_in_a_header(
    server: ServerThread,
) -> None:
    with client(server).chat.completions.with_streaming_response.create(
        model="fake", messages=MESSAGES, user="ada", stream=True
    ) as response:
        header = json.loads(response.headers["x-persona-provenance"])
        chunks = list(response.parse())
    assert (chunks[0].model_extra or {})["persona_provenance"] == header
    assert header["ai_generated"] is True and header["model"] == "fake"


def test_a_blocked_answer_is_marked_with_no_model(gateway_server: ServerThread) -> None:
    reply = client(gateway_server).chat.completions.create(
        model="fake",
        messages=CRISIS,
        user="gw-1",
        extra_headers={"X-Persona-Jurisdiction": "us-or-sb1546"},
    )
    assert reply.choices[0].finish_reason == "content_filter"  # Oregon interrupts
    assert "988" in (reply.choices[0].message.content or "")
    marker = (reply.model_extra or {})["persona_provenance"]
    assert marker["model"] is None
    assert marker["jurisdictions"] == ["eu-ai-act-art50", "us-or-sb1546"]


def test_without_the_header_the_deployment_laws_apply(gateway_server: ServerThread) -> None:
    reply = client(gateway_server).chat.completions.create(
        model="fake", messages=CRISIS, user="gw-2"
    )
    assert reply.choices[0].finish_reason == "stop"  # refer, not interrupt: the model answered
    assert (reply.model_extra or {})["persona_provenance"]["jurisdictions"] == ["eu-ai-act-art50"]


@pytest.mark.parametrize(
    ("trusted", "value", "says"),
    [
        (False, "us-or-sb1546", "trust_jurisdiction_header"),
        (True, "us-or-sb1546, us-xx", "unknown jurisdiction"),
    ],
)
def test_the_header_is_refused_unless_trusted_and_known(
    server: ServerThread, gateway_server: ServerThread, trusted: bool, value: str, says: str
) -> None:
    target = gateway_server if trusted else server
    response = httpx.post(
        target.base_url + "/v1/chat/completions",
        json={"model": "fake", "messages": MESSAGES, "user": "ada"},
        headers={**bearer(KEYS.app), "X-Persona-Jurisdiction": value},
    )
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]["message"]
