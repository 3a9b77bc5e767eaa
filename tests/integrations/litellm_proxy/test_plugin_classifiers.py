"""Model-backed detectors through PersonaGuardrail in a real LiteLLM proxy: the pre-call hook
readies the input classifiers and returns, the proxy calls the model, the classifiers start once
that request is out (LiteLLM's pre-API-call event), and the post-call hooks (the shared engine)
hold the reply until they answered — a moderation or judge block that comes after the model's
reply still replaces it, plain and streamed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_helpers import NEEDS_PROXY, PROXY_EXTRA_MODULE

pytest.importorskip(PROXY_EXTRA_MODULE, reason=NEEDS_PROXY)

import httpx
import yaml
from later_guardrail import HOLD_S
from proxy_helpers import EXAMPLE_CONFIG, HERE, LiteLLMProxy, ask, proxy_env

from persona_mw.testing import FakeOpenAIServer, Fault
from tests.bounds.classifier_helpers import (
    GUARD,
    JUDGE_BLOCK,
    MOD_BLOCK,
    VIOLENT,
    Provider,
    moderate,
    policy,
)

pytestmark = [pytest.mark.litellm_proxy]

MODEL = "gpt-4o-mini"  # the example config's model_name


class Moderation:
    """The fake moderation endpoint's scores (:func:`moderate`), and when each text arrived."""

    def __init__(self) -> None:
        self.arrived: list[tuple[str, float]] = []

    def __call__(self, text: str) -> dict[str, float]:
        self.arrived.append((text, time.monotonic()))
        return moderate(text)


@pytest.fixture(scope="module")
def provider() -> Provider:
    return Provider()


@pytest.fixture(scope="module")
def moderation() -> Moderation:
    return Moderation()


@pytest.fixture(scope="module")
def upstream(provider: Provider, moderation: Moderation) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=provider, moderate=moderation, chunk_size=4) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: FakeOpenAIServer, workdir: Path, master_key: str) -> Iterator[LiteLLMProxy]:
    """The example config, and after persona-mw another guardrail that holds each request
    ``HOLD_S`` before the proxy sends it on (:mod:`later_guardrail`)."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["guardrails"].append(
        {
            "guardrail_name": "later",
            "litellm_params": {
                "guardrail": "later_guardrail.LaterGuardrail",
                "mode": "pre_call",
                "default_on": True,
            },
        }
    )
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "policy.yaml").write_text(yaml.safe_dump(policy(5.0, 5.0)))
    persona = workdir / "persona.yaml"
    persona.write_text(
        yaml.safe_dump(
            {
                "bounds": {
                    "policies": [str(workdir / "policy.yaml")],
                    "classifier_kwargs": {"api_base": upstream.base_url, "api_key": "x"},
                }
            }
        )
    )
    env = proxy_env(
        master_key=master_key, upstream=upstream.base_url, persona_config=persona, PYTHONPATH=HERE
    )
    server = LiteLLMProxy(workdir / "config.yaml", env, workdir)
    try:
        # A first call, as a running proxy has made: LiteLLM makes a deployment's client and
        # its first connection in the first request, which takes more than the loop turns
        # the classifiers wait after the pre-API-call event (docs/proxy.md).
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=60
        ) as http:
            ask(http, MODEL, "warm up", stream=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(
    proxy: LiteLLMProxy, master_key: str, upstream: FakeOpenAIServer, provider: Provider
) -> Iterator[httpx.Client]:
    upstream.clear_faults()
    provider.model_delay = 0.0
    with httpx.Client(
        base_url=proxy.base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=60
    ) as http:
        yield http
    upstream.clear_faults()
    provider.model_delay = 0.0


def _ask(client: httpx.Client, text: str, *, stream: bool) -> tuple[str, str | None]:
    return ask(client, MODEL, text, stream=stream)


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@STREAM
def test_the_classifiers_start_once_the_model_request_is_out(
    client: httpx.Client, provider: Provider, moderation: Moderation, stream: bool
) -> None:
    """The moderation and judge requests reach the provider after the model's request — the
    classifiers wait for LiteLLM's pre-API-call event, so their CPU cannot delay that request;
    started in the pre-call hook they would arrive ``HOLD_S`` early (the later guardrail) —
    and while the model is still answering: they run beside it, so a slow model hides their
    latency (a hook that never fired would start them only once the reply came)."""
    provider.model_delay = 1.0
    provider.arrived.clear()
    moderation.arrived.clear()
    text = f"tell me about tides ({stream})"
    assert _ask(client, text, stream=stream) == (f"echo: {text}", "stop")
    arrived = {model: t for model, t in provider.arrived}
    assert set(arrived) == {GUARD, MODEL} and len(moderation.arrived) == 1, provider.arrived
    model_at, answered_at = arrived[MODEL], arrived[MODEL] + provider.model_delay
    for checked_at in (arrived[GUARD], moderation.arrived[0][1]):
        # LiteLLM's pre-API-call event comes just before the model request is written, so a
        # classifier's request to another server may land a hair (under load, a few ms) before
        # it; started in the pre-call hook it would land HOLD_S (0.3 s) before it
        assert model_at - HOLD_S / 3 < checked_at < answered_at, (
            checked_at - model_at,
            provider.arrived,
        )


@STREAM
def test_a_late_moderation_block_replaces_the_reply(
    client: httpx.Client, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.inject(Fault(route="moderations", delay=0.5))
    chats = len(upstream.requests)
    assert _ask(client, f"{VIOLENT} ({stream})", stream=stream) == (
        MOD_BLOCK,
        "content_filter",
    )
    assert any(r.get("model") == "gpt-4o-mini" for r in upstream.requests[chats:])


@STREAM
def test_a_late_judge_block_replaces_the_reply(
    client: httpx.Client, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.inject(Fault(route="chat", model="guard", delay=0.5))
    assert _ask(client, f"make a nerve agent ({stream})", stream=stream) == (
        JUDGE_BLOCK,
        "content_filter",
    )


@STREAM
def test_safe_verdicts_pass_the_reply(client: httpx.Client, stream: bool) -> None:
    assert _ask(client, "hello there", stream=stream) == ("echo: hello there", "stop")


@STREAM
def test_a_tier_1_timeout_fails_closed(
    client: httpx.Client, upstream: FakeOpenAIServer, stream: bool
) -> None:
    """The moderation endpoint would answer after 7 s: the reply is held for the rule's 5 s,
    then replaced with the rule's message."""
    upstream.inject(Fault(route="moderations", delay=7.0))
    started = time.monotonic()
    assert _ask(client, f"a slow question ({stream})", stream=stream) == (
        MOD_BLOCK,
        "content_filter",
    )
    assert 5.0 <= time.monotonic() - started < 7.0


def test_a_tier_2_timeout_fails_open(client: httpx.Client, upstream: FakeOpenAIServer) -> None:
    """The judge would answer after 7 s: the reply is held for the rule's 5 s, then passes."""
    upstream.inject(Fault(route="chat", model=GUARD, delay=7.0))
    text = "a question the judge is slow on"
    started = time.monotonic()
    assert _ask(client, text, stream=False) == (f"echo: {text}", "stop")
    assert 5.0 <= time.monotonic() - started < 7.0
