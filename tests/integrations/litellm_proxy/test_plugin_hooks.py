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
    OUTPUT_BLOCK_MESSAGE,
    usage_key,
)
from proxy_helpers import EXAMPLE_CONFIG, HERE, LiteLLMProxy, proxy_env

from persona_mw import RedisProfileStore, parse_profile
from persona_mw.testing import FakeOpenAIServer, Fault

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
    env = proxy_env(master_key=master_key, upstream=upstream.base_url, persona_config=persona,
                    PYTHONPATH=HERE)
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
    client: httpx.Client, upstream: FakeOpenAIServer, redis_url: str, module_prefix: str,
    usage: Any, stream: bool, identify: Any, request: pytest.FixtureRequest,
) -> None:
    """The upstream sees the profile-built system message; the reply comes back unchanged; the
    proxy process records one usage row with the reply and its token counts."""
    user = f"ada-{request.node.callspec.id}"
    _set_profile(redis_url, module_prefix, user, style={"language": "es"},
                       own_rules="answer in haiku", consent={"personalisation": True})
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
    body = {"model": MODEL, "user": user,
            "messages": [{"role": "user", "content": f"say {BLOCK_OUTPUT} now"}]}
    if stream:
        chunks = _stream(client, body)
        text, reason = _text(chunks), _finish_reason(chunks)
        assert all("FORB" not in (c["choices"][0]["delta"].get("content") or "")
                   for c in chunks if c.get("choices"))
    else:
        response = client.post("/v1/chat/completions", json=body)
        choice = response.json()["choices"][0]
        text, reason = choice["message"]["content"], choice["finish_reason"]
    assert reason == "content_filter"
    assert "FORB" not in text and text.endswith(OUTPUT_BLOCK_MESSAGE)
    [row] = _wait_for(usage, user)
    assert row["outcome"] == "filtered" and row["finish_reason"] == "content_filter"


async def test_concurrent_requests_keep_their_own_context(
    proxy: LiteLLMProxy, master_key: str, upstream: FakeOpenAIServer, redis_url: str,
    module_prefix: str, usage: Any,
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

    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {master_key}"}) as http:
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
def test_streamed_usage_reaches_the_client(
    client: httpx.Client, usage: Any, blocked: bool
) -> None:
    """``stream_options.include_usage`` through the plugin: the usage chunk reaches the client
    (older LiteLLM sends it with one empty choice, which the hold-back must not swallow); for a
    blocked input no model ran, so it counts no tokens, not the ones LiteLLM's mock invents."""
    user = f"usage-{blocked}"
    content = f"{BLOCK_INPUT} x" if blocked else "count me"
    body = {"model": MODEL, "user": user, "messages": [{"role": "user", "content": content}],
            "stream_options": {"include_usage": True}}
    chunks = _stream(client, body)
    usages = [c["usage"] for c in chunks if c.get("usage")]
    assert usages, chunks
    tokens = (usages[-1]["prompt_tokens"], usages[-1]["completion_tokens"])
    [row] = _wait_for(usage, user)
    assert tokens == (row["prompt_tokens"], row["completion_tokens"])
    assert (tokens == (0, 0)) is blocked
