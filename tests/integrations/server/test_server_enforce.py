"""The server on the enforcement engine, through the real openai client: every choice (n > 1),
every field (tool-call arguments, reasoning_content, logprobs), and notices out of band for
structured replies (a body field and a header, never inside the JSON)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pydantic
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS, model_entry, write_config

from persona_mw.bounds.policy import AIDisclosure
from persona_mw.testing import FakeChoice, FakeOpenAIServer, FakeToolCall

CARD = "4111 1111 1111 1111"
BLOCKED = "Withheld by policy."
DISCLOSURE = AIDisclosure().text
POLICY = f"""
version: server-enforce
packs: [pii, ai-disclosure]
rules:
  - id: t.method
    tier: 1
    stage: output
    detector: {{kind: phrases, phrases: ["secret method"]}}
    action: block
    message: "{BLOCKED}"
"""
TOOLS = [{"type": "function", "function": {"name": "pay", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=3) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    base: Path = tmp_path_factory.mktemp("enforce")
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


def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEYS.app, max_retries=0)


def new_user() -> str:
    """A user on their first call of the day: the AI disclosure is due."""
    return f"u-{uuid.uuid4().hex[:8]}"


MESSAGES = [{"role": "user", "content": "hello"}]


# -- finding 3: every choice -------------------------------------------------------------------


def test_n2_checks_the_second_choice(server: ServerThread, upstream: FakeOpenAIServer) -> None:
    upstream.set_reply(
        lambda _: [
            FakeChoice(content="fine"),
            FakeChoice(content=f"card {CARD}; the secret method"),
        ]
    )
    reply = client(server).chat.completions.create(
        model="fake", messages=MESSAGES, user=new_user(), n=2
    )
    assert upstream.requests[-1]["n"] == 2
    first, second = reply.choices
    assert first.message.content.endswith("fine") and first.finish_reason == "stop"
    assert second.message.content.endswith(BLOCKED) and second.finish_reason == "content_filter"
    assert CARD not in reply.model_dump_json() and "secret method" not in reply.model_dump_json()


def test_n2_streamed_has_one_filter_per_choice(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    upstream.set_reply(
        lambda _: [FakeChoice(content=f"one {CARD} end"), FakeChoice(content="the secret method")]
    )
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    stream = client(server).chat.completions.create(
        model="fake", messages=MESSAGES, user=new_user(), n=2, stream=True
    )
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert texts[0].endswith("one [card removed] end") and finish[0] == "stop"
    assert texts[1].endswith(BLOCKED) and finish[1] == "content_filter"
    assert "secret method" not in texts[1]


# -- finding 6: every field --------------------------------------------------------------------


def test_tool_call_arguments_are_redacted_as_json(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    arguments = json.dumps({"card": CARD})
    upstream.set_reply(lambda _: FakeChoice(tool_calls=(FakeToolCall("pay", arguments),)))
    for stream in (False, True):
        if not stream:
            reply = client(server).chat.completions.create(
                model="fake", messages=MESSAGES, user=new_user(), tools=TOOLS
            )
            [call] = reply.choices[0].message.tool_calls or []
            got, finish = call.function.arguments, reply.choices[0].finish_reason
        else:
            got, finish = "", None
            for chunk in client(server).chat.completions.create(
                model="fake", messages=MESSAGES, user=new_user(), tools=TOOLS, stream=True
            ):
                for choice in chunk.choices:
                    for c in choice.delta.tool_calls or []:
                        got += (c.function and c.function.arguments) or ""
                    finish = choice.finish_reason or finish
        assert json.loads(got) == {"card": "[card removed]"}, stream
        assert finish == "tool_calls"


def test_reasoning_is_filtered_and_logprobs_dropped_after_a_redaction(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    upstream.set_reply(
        lambda _: FakeChoice(content=f"pay {CARD}", reasoning=f"their card {CARD}", logprobs=True)
    )
    reply = client(server).chat.completions.create(
        model="fake", messages=MESSAGES, user=new_user(), logprobs=True
    )
    choice = reply.choices[0]
    assert (choice.message.model_extra or {}).get(
        "reasoning_content"
    ) == "their card [card removed]"
    assert choice.logprobs is None
    assert CARD not in reply.model_dump_json()


def test_logprobs_pass_when_nothing_was_withheld(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    upstream.set_reply(lambda _: FakeChoice(content="all fine", logprobs=True))
    reply = client(server).chat.completions.create(
        model="fake", messages=MESSAGES, user="steady-user", logprobs=True
    )
    client(server).chat.completions.create(model="fake", messages=MESSAGES, user="steady-user")
    assert reply.choices[0].logprobs is not None
    assert "".join(t.token for t in reply.choices[0].logprobs.content or []) == "all fine"


# -- finding 10: notices out of band -----------------------------------------------------------


class Answer(pydantic.BaseModel):
    answer: int


def test_parse_works_on_the_first_call_of_the_day(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    """The real openai client's ``.parse()`` with a JSON schema: the AI disclosure due on this
    user's first call of the day used to be prepended to the JSON and broke the parse."""
    upstream.set_reply(lambda _: '{"answer": 4}')
    raw = client(server).beta.chat.completions.with_raw_response.parse(
        model="fake", messages=MESSAGES, user=new_user(), response_format=Answer
    )
    parsed = raw.parse()
    assert parsed.choices[0].message.parsed == Answer(answer=4)
    notices = (parsed.model_extra or {})["persona_notices"]
    assert [n["text"] for n in notices] == [DISCLOSURE]
    assert [n["text"] for n in json.loads(raw.headers["x-persona-notices"])] == [DISCLOSURE]


def test_a_streamed_json_reply_has_the_notices_in_the_header(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    upstream.set_reply(lambda _: '{"answer": 4}')
    with client(server).chat.completions.with_streaming_response.create(
        model="fake",
        messages=MESSAGES,
        user=new_user(),
        response_format={"type": "json_object"},
        stream=True,
    ) as response:
        header = json.loads(response.headers["x-persona-notices"])
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": 4}
    assert [n["text"] for n in header] == [DISCLOSURE]
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert [n["text"] for n in (last.model_extra or {})["persona_notices"]] == [DISCLOSURE]


def test_plain_text_keeps_the_notice_in_the_reply(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    upstream.set_reply(lambda _: "Four.")
    raw = client(server).chat.completions.with_raw_response.create(
        model="fake", messages=MESSAGES, user=new_user()
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == f"{DISCLOSURE}\n\nFour."
    assert "x-persona-notices" not in raw.headers


# -- finding 4 through the server: history replay --------------------------------------------


@pytest.mark.parametrize("role", ["user", "assistant", "system", "tool"])
def test_a_card_in_replayed_history_never_reaches_the_model(
    server: ServerThread, upstream: FakeOpenAIServer, role: str
) -> None:
    """A chat app replays the whole conversation on every turn. A card in an earlier message
    (any role, the second of two text parts) is redacted before the upstream sees it, and the
    reply still comes back."""
    earlier: dict[str, object] = {
        "role": role,
        "content": [
            {"type": "text", "text": "my card is"},
            {"type": "text", "text": f"{CARD}, keep it"},
        ],
    }
    if role == "tool":
        earlier = {"role": "tool", "tool_call_id": "c1", "content": f"card {CARD}"}
    history = [earlier, {"role": "user", "content": "thanks, and now?"}]
    if role == "tool":
        call = {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": "{}"}}
        history.insert(0, {"role": "assistant", "content": None, "tool_calls": [call]})
    upstream.set_reply(lambda _: "noted")
    sent_before = len(upstream.requests)
    reply = client(server).chat.completions.create(
        model="fake",
        messages=history,
        user=new_user(),  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content.endswith("noted")  # type: ignore[union-attr]
    (sent,) = upstream.requests[sent_before:]
    wire = json.dumps(sent["messages"])
    assert "4111" not in wire and "[card removed]" in wire
