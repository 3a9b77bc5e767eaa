"""PersonaGuardrail inside a real LiteLLM proxy: every hook, through HTTP, with test stages.

The proxy runs the example config plus ``persona_factory`` pointing at
``persona_plugin_stages.factory``, whose stages make each hook's effect visible: the prompt the
upstream receives, output held back and blocked, usage recorded in Redis by the proxy process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import NEEDS_PROXY, PROXY_EXTRA_MODULE

pytest.importorskip(PROXY_EXTRA_MODULE, reason=NEEDS_PROXY)

import httpx
import redis
import yaml
from persona_plugin_stages import (
    BLOCK_INPUT,
    BLOCK_OUTPUT,
    INPUT_BLOCK_MESSAGE,
    NOTICE,
    NOTICE_ME,
    OUTPUT_BLOCK_MESSAGE,
    usage_key,
)
from proxy_helpers import EXAMPLE_CONFIG, HERE, LiteLLMProxy, proxy_env

from persona_mw import RedisProfileStore, parse_profile
from persona_mw.testing import FakeChoice, FakeOpenAIServer, Fault, echo_reply

pytestmark = [pytest.mark.litellm_proxy, pytest.mark.redis]

MODEL = "gpt-4o-mini"  # the example config's model_name


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=4) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    upstream: FakeOpenAIServer, redis_url: str, module_prefix: str, workdir: Path, master_key: str
) -> Iterator[LiteLLMProxy]:
    """The example config, with the test stages plugged in through ``persona_factory``."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["guardrails"][0]["litellm_params"]["persona_factory"] = "persona_plugin_stages:factory"
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    persona = workdir / "persona.yaml"
    persona.write_text(yaml.safe_dump({"store": {"url": redis_url, "prefix": module_prefix}}))
    env = proxy_env(
        master_key=master_key, upstream=upstream.base_url, persona_config=persona, PYTHONPATH=HERE
    )
    server = LiteLLMProxy(workdir / "config.yaml", env, workdir)
    yield server
    server.stop()


@pytest.fixture
def client(proxy: LiteLLMProxy, master_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=proxy.base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=30
    ) as http:
        yield http


@pytest.fixture
def usage(redis_url: str, module_prefix: str) -> Iterator[Any]:
    """Reads what the proxy's finish stage recorded, by request id."""
    r = redis.Redis.from_url(redis_url)

    def records(user: str) -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in r.lrange(usage_key(module_prefix), 0, -1)]
        return [row for row in rows if row["user"] == user]

    yield records
    r.close()


def _set_profile(redis_url: str, prefix: str, user: str, **fields: Any) -> None:
    asyncio.run(_put_profile(redis_url, prefix, user, fields))


async def _put_profile(redis_url: str, prefix: str, user: str, fields: dict[str, Any]) -> None:
    store = RedisProfileStore(redis_url, prefix=prefix)
    try:
        await store.put(parse_profile({"user_id": user, **fields}))
    finally:
        await store.aclose()


def _stream(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks = []
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
    )


def _finish_reason(chunks: list[dict[str, Any]]) -> str | None:
    reasons = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    return next((r for r in reversed(reasons) if r), None)


def _wait_for(records: Any, user: str, n: int = 1) -> list[dict[str, Any]]:
    """Usage is recorded as the proxy finishes the response; allow it a moment."""
    for _ in range(100):
        rows = records(user)
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    return records(user)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    "identify",
    [
        pytest.param(lambda user: {"user": user}, id="user-field"),
        pytest.param(lambda user: {"metadata": {"user_id": user}}, id="metadata-user_id"),
    ],
)
def test_consenting_user_gets_a_personalised_prompt_and_usage_is_recorded(
    client: httpx.Client,
    upstream: FakeOpenAIServer,
    redis_url: str,
    module_prefix: str,
    usage: Any,
    stream: bool,
    identify: Any,
    request: pytest.FixtureRequest,
) -> None:
    """The upstream sees the profile-built system message; the reply comes back unchanged; the
    proxy process records one usage row with the reply and its token counts."""
    user = f"ada-{request.node.callspec.id}"
    _set_profile(
        redis_url,
        module_prefix,
        user,
        style={"language": "es"},
        own_rules="answer in haiku",
        consent={"personalisation": True},
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hola"}], **identify(user)}
    if stream:
        text = _text(_stream(client, body))
    else:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
    assert text == "echo: hola"
    seen = upstream.requests[-1]["messages"]
    system = f"user={user}; language=es; rules=answer in haiku"
    assert seen[0] == {"role": "system", "content": system}
    assert seen[1:] == [{"role": "user", "content": "hola"}]
    [row] = _wait_for(usage, user)
    assert row["outcome"] == "ok" and row["stream"] is stream and row["surface"] == "litellm-proxy"
    assert row["output"] == "echo: hola" and row["finish_reason"] == "stop"
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0


def test_without_consent_the_prompt_is_left_alone(
    client: httpx.Client, upstream: FakeOpenAIServer, redis_url: str, module_prefix: str
) -> None:
    _set_profile(redis_url, module_prefix, "no-consent", style={"language": "es"})
    body = {"model": MODEL, "user": "no-consent", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert upstream.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_blocked_input_is_answered_without_calling_the_model(
    client: httpx.Client, upstream: FakeOpenAIServer, usage: Any, stream: bool
) -> None:
    """An input stage's block becomes a normal reply with finish_reason content_filter (no
    HTTP error), the upstream never sees the request, and the call is recorded as blocked."""
    user = f"blocked-{stream}"
    before = len(upstream.requests)
    question = [{"role": "user", "content": f"{BLOCK_INPUT} x"}]
    body = {"model": MODEL, "user": user, "messages": question}
    if stream:
        chunks = _stream(client, body)
        text, reason = _text(chunks), _finish_reason(chunks)
    else:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        text, reason = choice["message"]["content"], choice["finish_reason"]
    assert (text, reason) == (INPUT_BLOCK_MESSAGE, "content_filter")
    assert len(upstream.requests) == before
    [row] = _wait_for(usage, user)
    assert (row["outcome"], row["prompt_tokens"], row["completion_tokens"]) == ("blocked", 0, 0)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_blocked_output_never_reaches_the_client(
    client: httpx.Client, usage: Any, stream: bool
) -> None:
    """The echo carries the blocked word across 4-character chunks: the hold-back keeps every
    piece of it from the client, and the reply ends with the rule's message."""
    user = f"filtered-{stream}"
    body = {
        "model": MODEL,
        "user": user,
        "messages": [{"role": "user", "content": f"say {BLOCK_OUTPUT} now"}],
    }
    if stream:
        chunks = _stream(client, body)
        text, reason = _text(chunks), _finish_reason(chunks)
        assert all(
            "FORB" not in (c["choices"][0]["delta"].get("content") or "")
            for c in chunks
            if c.get("choices")
        )
    else:
        response = client.post("/v1/chat/completions", json=body)
        choice = response.json()["choices"][0]
        text, reason = choice["message"]["content"], choice["finish_reason"]
    assert reason == "content_filter"
    assert "FORB" not in text and text.endswith(OUTPUT_BLOCK_MESSAGE)
    [row] = _wait_for(usage, user)
    assert row["outcome"] == "filtered" and row["finish_reason"] == "content_filter"


async def test_concurrent_requests_keep_their_own_context(
    proxy: LiteLLMProxy,
    master_key: str,
    upstream: FakeOpenAIServer,
    redis_url: str,
    module_prefix: str,
    usage: Any,
) -> None:
    """20 users at once, half streamed: each upstream prompt names its own user and each usage
    row its own reply. The guardrail object is shared; the per-call context must not be."""
    users = [f"par-{i}" for i in range(20)]
    for user in users:
        await _put_profile(redis_url, module_prefix, user, {"consent": {"personalisation": True}})

    async def one(http: httpx.AsyncClient, i: int, user: str) -> str:
        question = [{"role": "user", "content": f"q {user}"}]
        body = {"model": MODEL, "user": user, "messages": question, "stream": i % 2 == 1}
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        if i % 2:
            return "".join(
                json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                for line in response.text.splitlines()
                if line.startswith("data: {") and json.loads(line[6:]).get("choices")
            )
        return str(response.json()["choices"][0]["message"]["content"])

    async with httpx.AsyncClient(
        base_url=proxy.base_url, timeout=60, headers={"Authorization": f"Bearer {master_key}"}
    ) as http:
        replies = await asyncio.gather(*(one(http, i, u) for i, u in enumerate(users)))
    assert replies == [f"echo: q {u}" for u in users]
    for request in upstream.requests:
        messages = request["messages"]
        if messages[-1]["content"].startswith("q par-"):
            asked_for = messages[-1]["content"][2:]
            assert messages[0]["content"].startswith(f"user={asked_for};")
    for user in users:
        [row] = _wait_for(usage, user)
        assert row["output"] == f"echo: q {user}"


def test_upstream_failure_is_recorded_as_an_error(
    client: httpx.Client, upstream: FakeOpenAIServer, usage: Any
) -> None:
    upstream.inject(Fault(status=400, times=1))  # 400: not retried by LiteLLM
    body = {"model": MODEL, "user": "fails", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code >= 400
    [row] = _wait_for(usage, "fails")
    assert row["outcome"] == "error"


@pytest.mark.parametrize("blocked", [False, True], ids=["answered", "blocked-input"])
def test_streamed_usage_reaches_the_client(client: httpx.Client, usage: Any, blocked: bool) -> None:
    """``stream_options.include_usage`` through the plugin: the usage chunk reaches the client
    (older LiteLLM sends it with one empty choice, which the hold-back must not swallow); for a
    blocked input no model ran, so it counts no tokens, not the ones LiteLLM's mock invents."""
    user = f"usage-{blocked}"
    content = f"{BLOCK_INPUT} x" if blocked else "count me"
    body = {
        "model": MODEL,
        "user": user,
        "messages": [{"role": "user", "content": content}],
        "stream_options": {"include_usage": True},
    }
    chunks = _stream(client, body)
    usages = [c["usage"] for c in chunks if c.get("usage")]
    assert usages, chunks
    tokens = (usages[-1]["prompt_tokens"], usages[-1]["completion_tokens"])
    [row] = _wait_for(usage, user)
    assert tokens == (row["prompt_tokens"], row["completion_tokens"])
    assert (tokens == (0, 0)) is blocked


# -- every route, every way of naming the user (issue 12, finding 8) ---------------------------

#: Routes of the LiteLLM proxy that carry text to or from a model, with a minimal body. The
#: plugin enforces chat completions only; each of these must be refused, never passed on.
UNENFORCED_ROUTES = [
    pytest.param("/v1/responses", {"model": MODEL, "input": "hi"}, "aresponses", id="responses"),
    pytest.param(
        "/v1/responses",
        {"model": MODEL, "input": "hi", "stream": True},
        "aresponses",
        id="responses-stream",
    ),
    pytest.param(
        "/v1/completions",
        {"model": MODEL, "prompt": "hi"},
        "atext_completion",
        id="text-completion",
    ),
    pytest.param("/v1/embeddings", {"model": MODEL, "input": "hi"}, "aembedding", id="embeddings"),
    pytest.param(
        "/v1/messages",
        {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        "anthropic_messages",
        id="anthropic-messages",
    ),
    pytest.param(
        "/v1/images/generations", {"model": MODEL, "prompt": "hi"}, "image_generation", id="images"
    ),
    pytest.param(
        "/v1/moderations", {"model": MODEL, "input": "hi"}, "moderation", id="moderations"
    ),
    pytest.param(
        "/v1/audio/speech",
        {"model": MODEL, "input": "hi", "voice": "alloy"},
        "aspeech",
        id="speech",
    ),
]


@pytest.mark.parametrize(("path", "body", "call_type"), UNENFORCED_ROUTES)
def test_a_route_the_plugin_does_not_enforce_is_refused_naming_it(
    client: httpx.Client,
    upstream: FakeOpenAIServer,
    path: str,
    body: dict[str, Any],
    call_type: str,
) -> None:
    """A /v1/responses request used to reach the model with no bounds at all (tier 1
    included). Every route the plugin cannot hold to the bounds is refused before the model is
    called, with an error that names the route and says what to use instead."""
    before = len(upstream.requests)
    response = client.post(path, json={**body, "user": "router"})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert f"{path} (LiteLLM call type {call_type!r})" in message, message
    assert "/v1/chat/completions" in message, message
    assert len(upstream.requests) == before


def test_header_user_wins_and_no_user_id_reaches_the_provider(
    client: httpx.Client, upstream: FakeOpenAIServer, usage: Any
) -> None:
    """X-Persona-User names the end user over the body's ``user`` (as in ``persona-mw
    serve``), and neither id is sent on to the model provider (docs/proxy.md promises so)."""
    body = {
        "model": MODEL,
        "user": "body-user-7",
        "metadata": {"user_id": "meta-user-7"},
        "messages": [{"role": "user", "content": "who am I"}],
    }
    response = client.post(
        "/v1/chat/completions", json=body, headers={"X-Persona-User": "header-user-7"}
    )
    assert response.status_code == 200, response.text
    [row] = _wait_for(usage, "header-user-7")
    assert row["output"] == "echo: who am I"
    assert usage("body-user-7") == [] and usage("meta-user-7") == []
    sent = json.dumps(upstream.requests[-1])
    assert not any(f"{who}-user-7" in sent for who in ("header", "body", "meta")), sent


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("identify", "user"),
    [
        pytest.param({"user": "fw-body"}, "fw-body", id="user-field"),
        pytest.param({"metadata": {"user_id": "fw-meta"}}, "fw-meta", id="metadata-user_id"),
        pytest.param(
            {"user": "fw-both", "metadata": {"user_id": "fw-other"}},
            "fw-both",
            id="user-field-over-metadata",
        ),
    ],
)
def test_the_body_names_the_user_who_is_not_forwarded(
    client: httpx.Client,
    upstream: FakeOpenAIServer,
    usage: Any,
    stream: bool,
    identify: dict[str, Any],
    user: str,
) -> None:
    user = f"{user}-{stream}"
    if "user" in identify:
        identify = {**identify, "user": f"{identify['user']}-{stream}"}
    else:
        identify = {"metadata": {"user_id": user}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **identify}
    if stream:
        assert _text(_stream(client, body)) == "echo: hi"
    else:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert len(_wait_for(usage, user)) == 1
    sent = json.dumps(upstream.requests[-1])
    assert "fw-" not in sent, sent


# -- every choice (issue 12, finding 3) ---------------------------------------------------------


@pytest.fixture
def two_choices(upstream: FakeOpenAIServer) -> Iterator[None]:
    """The upstream answers n=2 with a clean choice 0 and a choice 1 that says the blocked word
    (split across the fake's 4-character chunks)."""
    upstream.set_reply(
        lambda request: [
            FakeChoice(content="a clean first answer"),
            FakeChoice(content=f"then {BLOCK_OUTPUT} in the second"),
        ]
    )
    yield
    upstream.set_reply(echo_reply)


@pytest.mark.usefixtures("two_choices")
def test_every_choice_of_a_plain_reply_is_checked(client: httpx.Client, usage: Any) -> None:
    """n=2 used to return choice 1 unfiltered: the output rules ran on choice 0 only."""
    body = {
        "model": MODEL,
        "user": "two-plain",
        "n": 2,
        "messages": [{"role": "user", "content": "twice"}],
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choices = sorted(response.json()["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1]
    assert choices[0]["message"]["content"] == "a clean first answer"
    assert choices[0]["finish_reason"] == "stop"
    assert "FORB" not in choices[1]["message"]["content"]
    assert choices[1]["message"]["content"] == OUTPUT_BLOCK_MESSAGE
    assert choices[1]["finish_reason"] == "content_filter"
    [row] = _wait_for(usage, "two-plain")
    assert row["outcome"] == "filtered"


@pytest.mark.usefixtures("two_choices")
def test_every_choice_of_a_stream_is_checked_and_kept(client: httpx.Client, usage: Any) -> None:
    """Streams used to drop choice 1 (one filter for the whole stream, fed choice 0 only).
    Each choice has its own filter: choice 0 arrives whole, choice 1 stops at the rule's
    message, and no chunk of either carries a piece of the blocked word."""
    body = {
        "model": MODEL,
        "user": "two-stream",
        "n": 2,
        "messages": [{"role": "user", "content": "twice"}],
    }
    chunks = _stream(client, body)
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            piece = choice["delta"].get("content") or ""
            assert "FORB" not in piece, chunks
            texts[choice["index"]] = texts.get(choice["index"], "") + piece
            if choice.get("finish_reason"):
                reasons[choice["index"]] = choice["finish_reason"]
    assert texts[0] == "a clean first answer"
    assert texts[1].startswith("then") and texts[1].endswith(OUTPUT_BLOCK_MESSAGE)
    assert reasons == {0: "stop", 1: "content_filter"}
    [row] = _wait_for(usage, "two-stream")
    assert row["outcome"] == "filtered"


# -- notices out of band (issue 12, finding 10) -------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("blocked", [False, True], ids=["answered", "blocked-input"])
def test_notices_stay_out_of_a_json_reply(
    client: httpx.Client, upstream: FakeOpenAIServer, stream: bool, blocked: bool
) -> None:
    """With ``response_format: json_object`` a notice in the content would break
    ``json.loads``: it goes to ``persona_notices`` beside the reply instead, and the content
    is exactly what the model (or the rule) said."""
    upstream.set_reply(lambda request: '{"ok": true}')
    question = f"{NOTICE_ME} {BLOCK_INPUT if blocked else ''} as json"
    body = {
        "model": MODEL,
        "user": f"json-{stream}-{blocked}",
        "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": question}],
    }
    try:
        if stream:
            chunks = _stream(client, body)
            text = _text(chunks)
            notices = [c["persona_notices"] for c in chunks if c.get("persona_notices")]
            assert notices, chunks
            carried = notices[-1]
        else:
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            text = response.json()["choices"][0]["message"]["content"]
            carried = response.json()["persona_notices"]
    finally:
        upstream.set_reply(echo_reply)
    assert NOTICE not in text
    assert text == (INPUT_BLOCK_MESSAGE if blocked else '{"ok": true}')
    assert carried == [{"text": NOTICE, "source": "test-notice", "position": "before"}]


def test_notices_frame_a_plain_text_reply(client: httpx.Client) -> None:
    """Without a structured format, notices stay in the text, as before."""
    body = {
        "model": MODEL,
        "user": "in-band",
        "messages": [{"role": "user", "content": f"{NOTICE_ME} hi"}],
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == (
        f"{NOTICE}\n\necho: {NOTICE_ME} hi"
    )


@pytest.mark.parametrize("messages", [[], "hi", None], ids=["empty", "a-string", "missing"])
def test_a_chat_request_without_messages_is_refused_and_says_why(
    client: httpx.Client, upstream: FakeOpenAIServer, messages: Any
) -> None:
    """``Middleware.begin`` validates the call; its error reaches the client as a 400 naming
    the field, not as a 500, and the model is not called."""
    before = len(upstream.requests)
    body: dict[str, Any] = {"model": MODEL, "user": "no-messages"}
    if messages is not None:
        body["messages"] = messages
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert "messages" in response.json()["error"]["message"]
    assert len(upstream.requests) == before


# -- provenance marker (issue 16, EU AI Act Art. 50(2)) ----------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_every_reply_carries_the_provenance_marker(client: httpx.Client, stream: bool) -> None:
    body = {
        "model": MODEL,
        "user": f"marked-{stream}",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        chunks = _stream(client, body)
        markers = [c["persona_provenance"] for c in chunks if c.get("persona_provenance")]
        assert len(markers) == 1, chunks
        marker = markers[0]
    else:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        marker = response.json()["persona_provenance"]
    assert marker["ai_generated"] is True
    assert marker["model"] == MODEL
