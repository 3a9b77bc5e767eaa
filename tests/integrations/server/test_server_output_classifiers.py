"""Model-backed rules on the reply through the server (real openai client, real HTTP): a
moderation rule with ``stage: output`` checks the reply — whole, or a stream in windows — and a
flagged window ends it with the rule's message and ``finish_reason="content_filter"``."""

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

from persona_mw.testing import FakeOpenAIServer, echo_reply
from tests.bounds.classifier_helpers import MOD_BLOCK, SAFE, VIOLENT_END, moderate, output_policy


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=echo_reply, moderate=moderate, chunk_size=4) as server:
        yield server


@pytest.fixture(scope="module")
def client(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    base: Path = tmp_path_factory.mktemp("output-classifiers")
    policy_file = base / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(output_policy()))
    path = write_config(
        base / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        server={"api_keys": KEYS.config()},
        bounds={
            "policies": [str(policy_file)],
            "classifier_kwargs": {"api_base": upstream.base_url, "api_key": "x"},
        },
    )
    with (
        ServerThread(create_app(load_server_config(path))) as running,
        openai.OpenAI(base_url=f"{running.base_url}/v1", api_key=KEYS.app) as http,
    ):
        yield http


def _ask(client: openai.OpenAI, text: str, *, stream: bool) -> tuple[str, str | None, int]:
    """The text the client received, the finish reason and how many content chunks came."""
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        reply = client.chat.completions.create(model="fake", messages=messages, user="ada")
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason, 1
    pieces, reason = [], None
    for chunk in client.chat.completions.create(
        model="fake", messages=messages, stream=True, user="ada"
    ):
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            reason = choice.finish_reason or reason
    return "".join(pieces), reason, len(pieces)


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@STREAM
def test_a_safe_reply_passes_the_reply_check(client: openai.OpenAI, stream: bool) -> None:
    text, reason, chunks = _ask(client, SAFE, stream=stream)
    assert text == f"echo: {SAFE}"
    assert reason == "stop"
    if stream:  # 4-character upstream chunks arrive as a few checked windows
        assert 2 <= chunks < len(text) // 8


@STREAM
def test_a_flagged_reply_ends_with_the_rules_message(client: openai.OpenAI, stream: bool) -> None:
    text, reason, _ = _ask(client, VIOLENT_END, stream=stream)
    assert reason == "content_filter"
    assert "hurt them" not in text
    assert text.endswith(MOD_BLOCK)
