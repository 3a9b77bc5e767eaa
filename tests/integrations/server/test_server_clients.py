"""Real OpenAI clients (the official SDK, sync / async / streaming, and LangChain's ChatOpenAI)
against our server, whose upstream is a real local OpenAI-style server."""

from __future__ import annotations

import openai
import pytest
from langchain_openai import ChatOpenAI
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS

from persona_mw.testing import FakeOpenAIServer

MESSAGES = [{"role": "user", "content": "how do I sleep better?"}]


def client(server: ServerThread, key: str = KEYS.app) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def test_sync_completion_goes_through_the_middleware(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    reply = client(server).chat.completions.create(model="fake", messages=MESSAGES, user="ada")
    assert reply.choices[0].message.content == "echo: how do I sleep better?"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "fake"
    assert (
        reply.usage is not None
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )
    seen = upstream.requests[-1]
    assert seen["messages"][-1]["content"] == "how do I sleep better?"
    assert "user" not in seen, "the end user's id must not be forwarded to the provider"


def test_passes_openai_parameters_but_not_litellm_ones(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    """OpenAI parameters reach the model; LiteLLM-only arguments (api_base, mock_response) in
    the body are ignored, so a client cannot redirect the deployment's credentials."""
    client(server).chat.completions.create(
        model="fake",
        messages=MESSAGES,
        user="ada",
        temperature=0.25,
        max_tokens=7,
        extra_body={"api_base": "http://attacker.invalid/v1", "mock_response": "pwned"},
    )
    seen = upstream.requests[-1]
    assert seen["temperature"] == 0.25 and seen["max_tokens"] == 7
    assert "mock_response" not in seen and "api_base" not in seen


@pytest.mark.parametrize("include_usage", [True, False])
def test_sync_streaming(server: ServerThread, include_usage: bool) -> None:
    stream = client(server).chat.completions.create(
        model="fake",
        messages=MESSAGES,
        user="ada",
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: how do I sleep better?"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert len({c.id for c in chunks}) == 1
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and not chunks[-1].choices
        assert usage_chunks[0].usage.completion_tokens > 0
    else:
        assert usage_chunks == []


def test_header_names_the_user_and_wins_over_the_body(
    server: ServerThread, upstream: FakeOpenAIServer
) -> None:
    """Precedence: X-Persona-User over the body's `user` (a gateway can pin the user)."""
    http = client(server).with_options(default_headers={"X-Persona-User": "ada"})
    reply = http.chat.completions.create(model="fake", messages=MESSAGES, user="mallory")
    assert reply.choices[0].message.content.startswith("echo:")
    no_user = client(server)
    with pytest.raises(openai.BadRequestError, match="X-Persona-User"):
        no_user.chat.completions.create(model="fake", messages=MESSAGES)


async def test_async_client_plain_and_streaming(server: ServerThread) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url + "/v1", api_key=KEYS.app, max_retries=0
    ) as aclient:
        reply = await aclient.chat.completions.create(model="fake", messages=MESSAGES, user="ada")
        assert reply.choices[0].message.content == "echo: how do I sleep better?"
        # Long enough to outlast the output bounds' hold-back, so it must arrive in pieces.
        long = [{"role": "user", "content": "tell me about sleep " * 20}]
        stream = await aclient.chat.completions.create(
            model="fake", messages=long, user="ada", stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == "echo: " + "tell me about sleep " * 20
        assert len(pieces) > 3, "the answer must arrive in several chunks, not buffered into one"


def test_models_lists_the_model_list(server: ServerThread, open_server: ServerThread) -> None:
    assert [m.id for m in client(server).models.list()] == ["fake"]
    assert [m.id for m in client(open_server, "anything").models.list()] == ["persona-demo/offline"]


def test_offline_demo_model_without_config(open_server: ServerThread) -> None:
    """No config: embedded defaults, the offline demo model, no auth (any key string works)."""
    api = client(open_server, "not-checked")
    reply = api.chat.completions.create(model="persona-demo/offline", messages=MESSAGES, user="ada")
    # embedded defaults include the tier-1 AI disclosure, so the demo reply follows that notice
    assert "[offline demo model]" in reply.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in api.chat.completions.create(
            model="persona-demo/offline", messages=MESSAGES, user="ada", stream=True
        )
        if c.choices
    )
    # the disclosure comes once a day, so only the first reply carries it; the answer is the same
    assert reply.choices[0].message.content.endswith(streamed)
    assert streamed.startswith("[offline demo model]")


def test_langchain_chat_openai(server: ServerThread) -> None:
    chat = ChatOpenAI(
        base_url=server.base_url + "/v1",
        api_key=KEYS.app,
        model="fake",
        max_retries=0,
        default_headers={"X-Persona-User": "ada"},
    )
    assert chat.invoke("hello there").content == "echo: hello there"
    assert "".join(str(c.content) for c in chat.stream("hello again")) == "echo: hello again"


async def test_langchain_chat_openai_async(server: ServerThread) -> None:
    chat = ChatOpenAI(
        base_url=server.base_url + "/v1",
        api_key=KEYS.app,
        model="fake",
        max_retries=0,
        model_kwargs={"user": "ada"},
    )
    assert (await chat.ainvoke("hi")).content == "echo: hi"
    assert "".join([str(c.content) async for c in chat.astream("hey")]) == "echo: hey"
