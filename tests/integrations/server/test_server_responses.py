"""``POST /v1/responses`` and ``GET /v1/models/{id}`` through the real openai client: a Response
goes through the same middleware as a chat completion (the profile's system prompt, the input and
output rules, the notices, usage), plain and streamed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS, model_entry, write_config

from persona_mw.bounds.policy import AIDisclosure
from persona_mw.testing import FakeChoice, FakeOpenAIServer, FakeToolCall, echo_reply

CARD = "4111 1111 1111 1111"
BLOCKED = "Withheld by policy."
DISCLOSURE = AIDisclosure().text
POLICY = f"""
version: server-responses
packs: [pii, ai-disclosure]
rules:
  - id: t.method
    tier: 1
    stage: output
    detector: {{kind: phrases, phrases: ["secret method"]}}
    action: block
    message: "{BLOCKED}"
"""
TOOLS = [{"type": "function", "name": "pay", "parameters": {"type": "object"}}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    base: Path = tmp_path_factory.mktemp("responses")
    policy = base / "policy.yaml"
    policy.write_text(POLICY)
    path = write_config(
        base / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        server={"api_keys": KEYS.config()},
        bounds={"policies": [str(policy)]},
    )
    with ServerThread(create_app(load_server_config(path))) as running:
        yield running


@pytest.fixture(autouse=True)
def _echo(upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(echo_reply)


def client(server: ServerThread, key: str = KEYS.app) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def new_user() -> str:
    """A user on their first call of the day: the AI disclosure is due."""
    return f"u-{uuid.uuid4().hex[:8]}"


def streamed_text(server: ServerThread, **request: object) -> tuple[str, str]:
    """The text and final status of a ``responses.stream``, from its events and its final
    Response (they must agree)."""
    deltas = []
    with client(server).responses.stream(model="fake", **request) as stream:  # type: ignore[arg-type]
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text
    return final.output_text, final.status or ""


def test_a_response_goes_through_the_middleware(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    """Instructions become the developer's system message; the persona's system prompt is there
    too; the end user's id is not forwarded; the first reply of the day carries the AI
    disclosure; the usage is counted."""
    user = new_user()
    reply = client(server).responses.create(
        model="fake", input="how do I sleep better?", instructions="Be brief.", user=user
    )
    assert reply.status == "completed" and reply.model == "fake"
    assert "echo: how do I sleep better?" in reply.output_text
    assert DISCLOSURE in reply.output_text
    assert reply.usage is not None and reply.usage.total_tokens > 0
    seen = upstream.requests[-1]
    roles = [m["role"] for m in seen["messages"]]
    assert roles[-1] == "user" and "system" in roles
    assert any("Be brief." in str(m["content"]) for m in seen["messages"] if m["role"] == "system")
    assert "user" not in seen and user not in json.dumps(seen)


def test_max_output_tokens_and_temperature_reach_the_model(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    client(server).responses.create(
        model="fake", input="hi", user=new_user(), max_output_tokens=9, temperature=0.3
    )
    seen = upstream.requests[-1]
    assert seen["max_tokens"] == 9 and seen["temperature"] == 0.3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_output_rules_redact(
    server: ServerThread, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.set_reply(lambda _: f"your card {CARD} is fine")
    request = {"input": "my card?", "user": new_user()}
    if stream:
        text, status = streamed_text(server, **request)
    else:
        reply = client(server).responses.create(model="fake", **request)  # type: ignore[arg-type]
        text, status = reply.output_text, reply.status or ""
    assert CARD not in text and "[card removed]" in text
    assert status == "completed"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_output_block_ends_the_response_incomplete(
    server: ServerThread, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.set_reply(lambda _: "here is the secret method, step by step: one, two, three")
    request = {"input": "tell me", "user": new_user()}
    if stream:
        text, status = streamed_text(server, **request)
    else:
        reply = client(server).responses.create(model="fake", **request)  # type: ignore[arg-type]
        text, status = reply.output_text, reply.status or ""
        assert reply.incomplete_details is not None
        assert reply.incomplete_details.reason == "content_filter"
    assert BLOCKED in text and "secret method" not in text
    assert status == "incomplete"


def test_input_rules_apply_to_input_items(server: ServerThread, upstream: FakeOpenAIServer) -> None:
    """An input given as message items with input_text parts is checked like chat messages."""
    before = len(upstream.requests)
    client(server).responses.create(
        model="fake",
        input=[{"role": "user", "content": [{"type": "input_text", "text": f"card {CARD} ok?"}]}],
        user=new_user(),
    )
    assert len(upstream.requests) == before + 1
    assert CARD not in json.dumps(upstream.requests[-1]["messages"])


def test_streamed_events_are_in_order(server: ServerThread) -> None:
    events = list(
        client(server).responses.create(
            model="fake", input="count to three", user=new_user(), stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_calls_come_back_as_function_call_items_with_checked_arguments(
    server: ServerThread, upstream: FakeOpenAIServer, stream: bool
) -> None:
    arguments = json.dumps({"card": CARD})
    upstream.set_reply(lambda _: FakeChoice(tool_calls=(FakeToolCall("pay", arguments),)))
    request = {"input": "pay it", "user": new_user(), "tools": TOOLS}
    if stream:
        with client(server).responses.stream(model="fake", **request) as events:  # type: ignore[arg-type]
            final = events.get_final_response()
    else:
        final = client(server).responses.create(model="fake", **request)  # type: ignore[arg-type]
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["pay"]
    assert json.loads(calls[0].arguments) == {"card": "[card removed]"}
    assert upstream.requests[-1]["tools"][0]["function"]["name"] == "pay"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_response_carries_the_provenance_marker_in_a_field_and_a_header(
    server: ServerThread, stream: bool
) -> None:
    """EU AI Act Art. 50(2) on /v1/responses: the marker is in the Response object (the final
    one of a stream too) and in the X-Persona-Provenance header, and they agree."""
    request = {"input": "hi", "user": new_user()}
    if stream:
        with client(server).responses.with_streaming_response.create(
            model="fake",
            stream=True,
            **request,  # type: ignore[arg-type]
        ) as raw:
            header = json.loads(raw.headers["x-persona-provenance"])
            events = list(raw.parse())
        completed = [e for e in events if e.type == "response.completed"]
        assert len(completed) == 1
        marker = (completed[0].response.model_extra or {})["persona_provenance"]
    else:
        raw_reply = client(server).responses.with_raw_response.create(model="fake", **request)  # type: ignore[arg-type]
        header = json.loads(raw_reply.headers["x-persona-provenance"])
        marker = (raw_reply.parse().model_extra or {})["persona_provenance"]
    assert marker == header
    assert marker["ai_generated"] is True and marker["model"] == "fake"
    assert marker["policy_version"] == "server-responses"


def test_a_response_needs_an_end_user(server: ServerThread) -> None:
    with pytest.raises(openai.BadRequestError, match="end-user id"):
        client(server).responses.create(model="fake", input="hi")


def test_unknown_model_is_404_naming_the_served_ones(server: ServerThread) -> None:
    with pytest.raises(openai.NotFoundError, match="fake"):
        client(server).responses.create(model="nope", input="hi", user="ada")


def test_models_retrieve(server: ServerThread) -> None:
    card = client(server).models.retrieve("fake")
    assert card.id == "fake" and card.object == "model"
    with pytest.raises(openai.NotFoundError, match="'nope' is not served"):
        client(server).models.retrieve("nope")


def test_a_user_key_may_not_call_responses(server: ServerThread) -> None:
    """The same permission as chat completions: a user key manages its own profile only."""
    with pytest.raises(openai.PermissionDeniedError, match="not call completions"):
        client(server, KEYS.ada).responses.create(model="fake", input="hi", user="ada")


def test_openapi_documents_no_422_it_never_sends(server: ServerThread) -> None:
    """Request validation answers 400 in OpenAI's format; the only 422 is a profile write
    whose text an input rule refuses."""
    spec = httpx.get(server.base_url + "/openapi.json").json()
    with_422 = sorted(
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
        if "422" in op.get("responses", {})
    )
    assert with_422 == ["PATCH /v1/users/{user_id}/profile", "PUT /v1/users/{user_id}/profile"]
    assert "/v1/responses" in spec["paths"] and "/v1/models/{model_id}" in spec["paths"]
