"""Model-backed detectors through PersonaGuardrail in a real LiteLLM proxy: the pre-call hook
starts the input classifiers and returns, the proxy calls the model, and the post-call hooks
(the shared engine) hold the reply until the classifiers answered — a moderation or judge block
that comes after the model's reply still replaces it, plain and streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_helpers import NEEDS_PROXY, PROXY_EXTRA_MODULE

pytest.importorskip(PROXY_EXTRA_MODULE, reason=NEEDS_PROXY)

import httpx
import yaml
from proxy_helpers import EXAMPLE_CONFIG, LiteLLMProxy, ask, proxy_env

from persona_mw.testing import FakeOpenAIServer, Fault
from tests.bounds.classifier_helpers import JUDGE_BLOCK, MOD_BLOCK, Provider, moderate, policy

pytestmark = [pytest.mark.litellm_proxy]

MODEL = "gpt-4o-mini"  # the example config's model_name


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=Provider(), moderate=moderate, chunk_size=4) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: FakeOpenAIServer, workdir: Path, master_key: str) -> Iterator[LiteLLMProxy]:
    (workdir / "config.yaml").write_text(EXAMPLE_CONFIG.read_text())
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
    env = proxy_env(master_key=master_key, upstream=upstream.base_url, persona_config=persona)
    server = LiteLLMProxy(workdir / "config.yaml", env, workdir)
    yield server
    server.stop()


@pytest.fixture
def client(
    proxy: LiteLLMProxy, master_key: str, upstream: FakeOpenAIServer
) -> Iterator[httpx.Client]:
    upstream.clear_faults()
    with httpx.Client(
        base_url=proxy.base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=60
    ) as http:
        yield http
    upstream.clear_faults()


def _ask(client: httpx.Client, text: str, *, stream: bool) -> tuple[str, str | None]:
    return ask(client, MODEL, text, stream=stream)


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@STREAM
def test_a_late_moderation_block_replaces_the_reply(
    client: httpx.Client, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.inject(Fault(route="moderations", delay=0.5))
    chats = len(upstream.requests)
    assert _ask(client, f"I will hurt them ({stream})", stream=stream) == (
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


def test_a_tier_1_timeout_fails_closed(client: httpx.Client, upstream: FakeOpenAIServer) -> None:
    upstream.inject(Fault(route="moderations", delay=7.0))
    assert _ask(client, "a slow question", stream=False) == (MOD_BLOCK, "content_filter")
