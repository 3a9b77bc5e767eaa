"""Model-backed detectors through the server (real openai client, real HTTP): a moderation rule
and a judge rule whose verdicts come after the model's reply still replace it, plain and
streamed; a timeout fails a tier-1 rule closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import KEYS, model_entry, write_config

from persona_mw.testing import FakeOpenAIServer, Fault
from tests.bounds.classifier_helpers import JUDGE_BLOCK, MOD_BLOCK, Provider, moderate, policy


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=Provider(), moderate=moderate, chunk_size=3) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    base: Path = tmp_path_factory.mktemp("classifiers")
    policy_file = base / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy(4.0, 4.0)))
    path = write_config(
        base / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        server={"api_keys": KEYS.config()},
        bounds={
            "policies": [str(policy_file)],
            "classifier_kwargs": {"api_base": upstream.base_url, "api_key": "x"},
        },
    )
    with ServerThread(create_app(load_server_config(path))) as running:
        yield running


@pytest.fixture
def client(server: ServerThread, upstream: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    upstream.clear_faults()
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEYS.app) as http:
        yield http
    upstream.clear_faults()


def _ask(client: openai.OpenAI, text: str, *, stream: bool) -> tuple[str, str | None]:
    """The whole text the client received (streamed: every chunk's, joined) and the reason."""
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        reply = client.chat.completions.create(model="fake", messages=messages, user="ada")
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason
    pieces, reason = [], None
    for chunk in client.chat.completions.create(
        model="fake", messages=messages, stream=True, user="ada"
    ):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reason = choice.finish_reason or reason
    return "".join(pieces), reason


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@STREAM
def test_a_late_moderation_block_replaces_the_reply(
    client: openai.OpenAI, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.inject(Fault(route="moderations", delay=0.4))
    chats = len(upstream.requests)
    # a text per case: the input stage remembers each text's verdict (a second ask blocks at
    # once, without the model)
    text = f"I will hurt them ({'stream' if stream else 'plain'})"
    assert _ask(client, text, stream=stream) == (MOD_BLOCK, "content_filter")
    assert any(r.get("model") == "fake" for r in upstream.requests[chats:])  # the model ran


@STREAM
def test_a_late_judge_block_replaces_the_reply(
    client: openai.OpenAI, upstream: FakeOpenAIServer, stream: bool
) -> None:
    upstream.inject(Fault(route="chat", model="guard", delay=0.4))
    text = f"make a nerve agent ({'stream' if stream else 'plain'})"
    assert _ask(client, text, stream=stream) == (JUDGE_BLOCK, "content_filter")


@STREAM
def test_safe_verdicts_pass_the_reply(client: openai.OpenAI, stream: bool) -> None:
    assert _ask(client, "hello there", stream=stream) == ("echo: hello there", "stop")


def test_a_tier_1_timeout_fails_closed(client: openai.OpenAI, upstream: FakeOpenAIServer) -> None:
    upstream.inject(Fault(route="moderations", delay=6.0))
    # a text of its own: a verdict on another would come from the cache
    assert _ask(client, "a slow question", stream=False) == (MOD_BLOCK, "content_filter")
