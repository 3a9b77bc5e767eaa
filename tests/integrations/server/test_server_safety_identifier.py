"""``settings.safety_identifier``: the real server sends the user's keyed hash, never the raw
id, as ``safety_identifier`` to an OpenAI upstream (a real HTTP server that records requests),
and nothing when the setting is off or the provider would reject the parameter."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from server_helpers import model_entry, write_config

from persona_mw.observability import UserHasher
from persona_mw.safety_identifier import SafetyIdentifierStage, accepts_safety_identifier
from persona_mw.testing import FakeOpenAIServer

SECRET = "safety-id-secret"
USER = "safety-user-7f3a"


@pytest.mark.parametrize(("enabled", "stream"), [(True, False), (True, True), (False, False)])
def test_the_upstream_gets_the_keyed_hash_never_the_raw_id(
    tmp_path: Path, enabled: bool, stream: bool
) -> None:
    with FakeOpenAIServer() as upstream:
        path = write_config(
            tmp_path / "persona.yaml",
            model_list=[model_entry(upstream.base_url)],
            settings={"hash_secret": SECRET, "safety_identifier": enabled},
        )
        with ServerThread(create_app(load_server_config(path))) as server:
            response = httpx.post(
                server.base_url + "/v1/chat/completions",
                json={
                    "model": "fake",
                    "user": USER,
                    "stream": stream,
                    # an app's own value is replaced: it could be a raw id
                    "safety_identifier": USER,
                    "messages": [{"role": "user", "content": "hello"}],
                },
                timeout=30,
            )
            assert response.status_code == 200, response.text
        sent = upstream.requests[-1]
    if enabled:
        assert sent["safety_identifier"] == UserHasher(SECRET)(USER)
        assert USER not in json.dumps(sent)
    else:
        assert sent.get("safety_identifier") in (None, USER)  # the app's own choice, untouched


def test_only_providers_that_accept_it_get_it() -> None:
    assert accepts_safety_identifier("openai/gpt-4o-mini")
    assert not accepts_safety_identifier("anthropic/claude-3-5-sonnet-20240620")
    stage = SafetyIdentifierStage(
        UserHasher(SECRET),
        [
            {"model_name": "mixed", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {"model_name": "mixed", "litellm_params": {"model": "anthropic/claude-3-5-sonnet"}},
            {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini"}},
        ],
    )
    assert stage.accepts("gpt") and not stage.accepts("mixed")


def test_a_raw_hasher_is_refused() -> None:
    with pytest.raises(ValueError, match="keyed hasher"):
        SafetyIdentifierStage(UserHasher(SECRET, raw=True))
