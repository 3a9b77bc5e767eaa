"""The dict ↔ type edge of the LiteLLM plugin: pure functions, no proxy needed."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from persona_mw_litellm.edge import (
    ANONYMOUS_USER,
    CALL_KEY,
    attach_call,
    call_of,
    is_chat_call,
    resolve_user,
)

from persona_mw import CallContext, Profile


def _ctx(**kw: Any) -> CallContext:
    return CallContext(
        request_id="r1", user_id="ada", user_hash="h", model="m",
        messages=[{"role": "user", "content": "hi"}], prompt_messages=[], stream=False,
        llm_kwargs={}, profile=Profile.default("ada"), profile_source="default",
        started_at=datetime.now(UTC), **kw,
    )


@pytest.mark.parametrize(
    ("data", "key_user", "key_end_user", "expected"),
    [
        ({"user": "ada"}, "owner", "end", "ada"),
        ({"metadata": {"user_id": "bob"}}, "owner", "end", "bob"),
        ({"user": "ada", "metadata": {"user_id": "bob"}}, None, None, "ada"),
        ({"user": ""}, "owner", "end", "end"),
        ({}, "owner", None, "owner"),
        ({"user": 42, "metadata": "not a dict"}, None, None, ANONYMOUS_USER),
    ],
)
def test_resolve_user_prefers_the_request_then_metadata_then_the_key(
    data: dict[str, Any], key_user: str | None, key_end_user: str | None, expected: str
) -> None:
    assert resolve_user(data, key_user, key_end_user) == expected


@pytest.mark.parametrize(
    ("call_type", "expected"),
    [("acompletion", True), ("completion", True), ("aembedding", False), ("aresponses", False)],
)
def test_only_chat_completions_are_handled(call_type: str, expected: bool) -> None:
    assert is_chat_call(call_type) is expected


@pytest.mark.parametrize("metadata_key", ["metadata", "litellm_metadata"])
def test_the_call_survives_copies_and_serialisation_of_the_request(metadata_key: str) -> None:
    """LiteLLM copies and logs metadata: every copy must lead to the same context, and JSON
    logging (default=str) must show a short handle, not the profile."""
    ctx = _ctx()
    data: dict[str, Any] = {metadata_key: {"other": 1}}
    handle = attach_call(data, ctx)
    assert call_of(data) is handle
    assert call_of(copy.deepcopy(data)) is handle
    assert call_of({"litellm_params": copy.copy(data)}) is handle
    assert json.dumps(data, default=str) == json.dumps(
        {metadata_key: {"other": 1, CALL_KEY: "<persona_mw call r1>"}}
    )


def test_no_call_when_nothing_was_attached() -> None:
    assert call_of({"metadata": {CALL_KEY: "forged by a client"}}) is None
    assert call_of(None) is None


def test_the_example_persona_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/litellm_proxy/persona.yaml loads (docs that run), taking Redis and the hash
    secret from the environment as its comments promise."""
    from pathlib import Path

    from persona_mw import load_config

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("PERSONA_MW_HASH_SECRET", "s3cret")
    path = Path(__file__).resolve().parents[3] / "examples" / "litellm_proxy" / "persona.yaml"
    config = load_config(path)
    assert config.store.url == "redis://127.0.0.1:6379/0"
    assert config.settings.hash_secret is not None
    assert config.settings.hash_secret.get_secret_value() == "s3cret"
