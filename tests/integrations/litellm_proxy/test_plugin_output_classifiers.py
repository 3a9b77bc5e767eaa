"""Model-backed rules on the reply (``stage: output``) through PersonaGuardrail in a real
LiteLLM proxy: the post-call hooks (the shared engine) hold the proxy's reply until the
moderation endpoint checked it — whole, or a stream in windows — and a flagged window ends it
with the rule's message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_helpers import NEEDS_PROXY, PROXY_EXTRA_MODULE

pytest.importorskip(PROXY_EXTRA_MODULE, reason=NEEDS_PROXY)

import httpx
import yaml
from proxy_helpers import EXAMPLE_CONFIG, LiteLLMProxy, ask, proxy_env

from persona_mw.testing import FakeOpenAIServer, echo_reply
from tests.bounds.classifier_helpers import MOD_BLOCK, SAFE, VIOLENT_END, moderate, output_policy

pytestmark = [pytest.mark.litellm_proxy]

MODEL = "gpt-4o-mini"  # the example config's model_name


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=echo_reply, moderate=moderate, chunk_size=4) as server:
        yield server


@pytest.fixture(scope="module")
def client(upstream: FakeOpenAIServer, workdir: Path, master_key: str) -> Iterator[httpx.Client]:
    (workdir / "config.yaml").write_text(EXAMPLE_CONFIG.read_text())
    (workdir / "policy.yaml").write_text(yaml.safe_dump(output_policy()))
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
    try:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {master_key}"}, timeout=60
        ) as http:
            yield http
    finally:
        server.stop()


def _ask(client: httpx.Client, text: str, *, stream: bool) -> tuple[str, str | None]:
    return ask(client, MODEL, text, stream=stream)


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@STREAM
def test_a_safe_reply_passes_the_reply_check(client: httpx.Client, stream: bool) -> None:
    assert _ask(client, SAFE, stream=stream) == (f"echo: {SAFE}", "stop")


@STREAM
def test_a_flagged_reply_ends_with_the_rules_message(client: httpx.Client, stream: bool) -> None:
    text, reason = _ask(client, VIOLENT_END, stream=stream)
    assert reason == "content_filter"
    assert "hurt them" not in text
    assert text.endswith(MOD_BLOCK)
