"""The LiteLLM client: Router or direct route, the same call on the wire and the same failures.

Against a real OpenAI-style server on loopback (FakeOpenAIServer): the request the upstream
receives, retries on 5xx, no retry on 4xx, the timeout, streaming, and the error types.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from persona_mw.errors import UpstreamError, UpstreamTimeout
from persona_mw.llm import LiteLLMClient, direct_routes
from persona_mw.testing import FakeOpenAIServer, Fault

MESSAGES = [{"role": "user", "content": "hello there"}]


def deployment(base_url: str, name: str = "fake", **params: Any) -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {
            "model": "openai/fake-model",
            "api_base": base_url,
            "api_key": "sk-test",
            **params,
        },
    }


# -- which names go direct ----------------------------------------------------------------------


def test_single_plain_deployments_go_direct() -> None:
    a, b = deployment("http://a", "a"), deployment("http://b", "b")
    assert direct_routes([a, b]) == {"a": a["litellm_params"], "b": b["litellm_params"]}


@pytest.mark.parametrize(
    ("model_list", "router_settings"),
    [
        ([deployment("http://a"), deployment("http://b")], None),  # two deployments: load balance
        ([deployment("http://a", rpm=10)], None),  # rate limits are the Router's
        ([deployment("http://a", temperature=0.2)], None),  # call defaults merge on the Router
        ([deployment("http://a", litellm_credential_name="c")], None),  # credential by reference
        ([deployment("http://a", api_key="os.environ/KEY")], None),  # only the Router resolves it
        ([deployment("http://a", max_retries=0)], None),  # would turn off the Router's retries
        ([{**deployment("http://a"), "model_info": {"id": "x"}}], None),
        ([deployment("http://a", "openai/*")], None),  # wildcard
        ([deployment("http://a")], {"num_retries": 5}),  # any router setting keeps the Router
    ],
)
def test_anything_for_the_router_keeps_the_router(
    model_list: list[dict[str, Any]], router_settings: dict[str, Any] | None
) -> None:
    assert direct_routes(model_list, router_settings) == {}


# -- the two paths behave alike -------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def clients(base_url: str, **kw: Any) -> dict[str, LiteLLMClient]:
    model_list = [deployment(base_url)]
    direct = LiteLLMClient.from_model_list(model_list, **kw)
    routed = LiteLLMClient.from_model_list(model_list, {"routing_strategy": "simple-shuffle"}, **kw)
    assert direct.direct and not routed.direct
    return {"direct": direct, "router": routed}


def requests_during(upstream: FakeOpenAIServer, before: int) -> list[dict[str, Any]]:
    return upstream.requests[before:]


async def test_same_request_on_the_wire_and_same_reply(upstream: FakeOpenAIServer) -> None:
    seen = {}
    for name, client in clients(upstream.base_url).items():
        before = len(upstream.requests)
        response = await client.acompletion(
            model="fake", messages=MESSAGES, temperature=0.3, max_tokens=20
        )
        (body,) = requests_during(upstream, before)
        seen[name] = (response.choices[0].message.content, body)
    (reply_d, body_d), (reply_r, body_r) = seen["direct"], seen["router"]
    assert reply_d == reply_r and reply_d
    assert body_d["model"] == body_r["model"] == "fake-model"
    for key in ("messages", "temperature", "max_tokens"):
        assert body_d[key] == body_r[key]


async def test_streams_alike(upstream: FakeOpenAIServer) -> None:
    texts = {}
    for name, client in clients(upstream.base_url).items():
        parts = [
            chunk.choices[0].delta.content or ""
            async for chunk in client.astream(model="fake", messages=MESSAGES)
            if chunk.choices
        ]
        texts[name] = "".join(parts)
    assert texts["direct"] == texts["router"] and texts["direct"]


@pytest.mark.parametrize(("status", "attempts"), [(500, 3), (400, 1)])
async def test_retries_alike(upstream: FakeOpenAIServer, status: int, attempts: int) -> None:
    """A server error is retried (twice, LiteLLM's default) on both paths; a client error not."""
    for name, client in clients(upstream.base_url).items():
        upstream.inject(Fault(status=status, times=5))
        before = len(upstream.requests)
        with pytest.raises(UpstreamError) as caught:
            await client.acompletion(model="fake", messages=MESSAGES)
        assert caught.value.status_code == status, name
        assert len(requests_during(upstream, before)) == attempts, name
        upstream.clear_faults()


async def test_timeout_applies_on_both_paths(upstream: FakeOpenAIServer) -> None:
    for client in clients(upstream.base_url, timeout=0.3).values():
        upstream.inject(Fault(delay=2.0, times=3))
        with pytest.raises(UpstreamTimeout):
            await client.acompletion(model="fake", messages=MESSAGES)
        upstream.clear_faults()


async def test_the_requests_timeout_outranks_the_deployments_on_both_paths(
    upstream: FakeOpenAIServer,
) -> None:
    """The Router's order: the request's timeout, then the deployment's, then the client's."""
    model_list = [deployment(upstream.base_url, timeout=0.3)]
    direct = LiteLLMClient.from_model_list(model_list, timeout=30)
    routed = LiteLLMClient.from_model_list(model_list, {"num_retries": 0}, timeout=30)
    assert direct.direct and not routed.direct
    for client in (direct, routed):
        upstream.inject(Fault(delay=1.0, times=1))
        response = await client.acompletion(model="fake", messages=MESSAGES, timeout=5)
        assert response.choices[0].message.content
        upstream.clear_faults()
        upstream.inject(Fault(delay=1.0, times=3))
        with pytest.raises(UpstreamTimeout):  # no request timeout: the deployment's 0.3 s
            await client.acompletion(model="fake", messages=MESSAGES)
        upstream.clear_faults()


async def test_unknown_model_names_the_problem(upstream: FakeOpenAIServer) -> None:
    for client in clients(upstream.base_url).values():
        with pytest.raises(UpstreamError, match="nope"):
            await client.acompletion(model="nope", messages=MESSAGES)
