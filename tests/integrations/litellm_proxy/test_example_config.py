"""The example config exactly as shipped (examples/litellm_proxy/config.yaml) in a real LiteLLM
proxy, with the middleware build_middleware wires: what a deployer gets out of the box."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import NEEDS_PROXY, PROXY_EXTRA_MODULE

pytest.importorskip(PROXY_EXTRA_MODULE, reason=NEEDS_PROXY)

import httpx
import yaml
from proxy_helpers import EXAMPLE_CONFIG, LiteLLMProxy, proxy_env

from persona_mw import RedisProfileStore, build_middleware, load_config, parse_profile
from persona_mw.testing import FakeOpenAIServer

pytestmark = [pytest.mark.litellm_proxy, pytest.mark.redis]

MODEL = "gpt-4o-mini"


def _personalisation_wired() -> bool:
    stages = build_middleware(load_config()).input_stages
    return any("personal" in stage.name for stage in stages)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=4) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    upstream: FakeOpenAIServer, redis_url: str, module_prefix: str, workdir: Path, master_key: str
) -> Iterator[LiteLLMProxy]:
    persona = workdir / "persona.yaml"
    persona.write_text(yaml.safe_dump({"store": {"url": redis_url, "prefix": module_prefix}}))
    env = proxy_env(master_key=master_key, upstream=upstream.base_url, persona_config=persona)
    server = LiteLLMProxy(EXAMPLE_CONFIG, env, workdir)
    yield server
    server.stop()


@pytest.fixture
def client(proxy: LiteLLMProxy, master_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=proxy.base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=30
    ) as http:
        yield http


def _events(proxy: LiteLLMProxy, user_hash: str | None = None) -> list[dict[str, Any]]:
    """The plugin's JSON log events (persona_log defaults to JSON on stderr)."""
    events = []
    for line in proxy.log().splitlines():
        if line.startswith("{") and '"request.completed"' in line:
            event = json.loads(line)
            if user_hash is None or event["user"] == user_hash:
                events.append(event)
    return events


def _ask(client: httpx.Client, user: str, text: str, *, stream: bool) -> str:
    body = {"model": MODEL, "user": user, "messages": [{"role": "user", "content": text}]}
    if not stream:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["message"]["content"])
    pieces = []
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    pieces.append(chunk["choices"][0]["delta"].get("content") or "")
    return "".join(pieces)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_every_call_is_logged_with_its_usage(
    proxy: LiteLLMProxy, client: httpx.Client, stream: bool
) -> None:
    """One request.completed event per call, from the proxy process, with surface, stream flag,
    outcome and token counts (the operator's view of usage)."""
    user = f"logged-{stream}"
    assert _ask(client, user, "hello", stream=stream).endswith("hello")
    for _ in range(50):
        events = [e for e in _events(proxy) if e["stream"] is stream and e["outcome"] == "ok"]
        if events:
            break
        time.sleep(0.05)
    assert events, proxy.log()[-3000:]
    event = events[-1]
    assert event["surface"] == "litellm-proxy" and event["model"] == MODEL
    assert event["prompt_tokens"] > 0 and event["completion_tokens"] > 0
    assert user not in json.dumps(event)  # pseudonymised


@pytest.mark.xfail(
    not _personalisation_wired(),
    strict=True,
    reason="build_middleware wires no personalisation stage yet (the personalise package has "
    "not landed); this passes, and the xfail must go, once it does",
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_shipped_config_personalises_for_a_consenting_user(
    client: httpx.Client,
    upstream: FakeOpenAIServer,
    redis_url: str,
    module_prefix: str,
    stream: bool,
) -> None:
    """A user whose profile (in Redis, consent on) asks for Spanish: the prompt the upstream
    receives carries that instruction in a system message the app never sent."""
    user = f"ana-{stream}"

    async def put() -> None:
        store = RedisProfileStore(redis_url, prefix=module_prefix)
        try:
            await store.put(
                parse_profile(
                    {
                        "user_id": user,
                        "style": {"language": "es", "verbosity": "terse"},
                        "consent": {"personalisation": True},
                    }
                )
            )
        finally:
            await store.aclose()

    asyncio.run(put())
    _ask(client, user, "How do I sleep better?", stream=stream)
    seen = upstream.requests[-1]["messages"]
    system = " ".join(m["content"] for m in seen if m["role"] == "system")
    assert re.search(r"spanish|español|\bes\b", system, re.IGNORECASE), seen
    assert seen[-1] == {"role": "user", "content": "How do I sleep better?"}
