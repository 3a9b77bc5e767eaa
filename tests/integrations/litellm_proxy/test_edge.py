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
    USER_HEADER,
    attach_call,
    call_of,
    call_type_name,
    forget_user,
    resolve_user,
)

from persona_mw import CallContext, Profile


def _ctx(**kw: Any) -> CallContext:
    return CallContext(
        request_id="r1",
        user_id="ada",
        user_hash="h",
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        prompt_messages=[],
        stream=False,
        llm_kwargs={},
        profile=Profile.default("ada"),
        profile_source="default",
        started_at=datetime.now(UTC),
        **kw,
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


def test_the_header_names_the_user_before_the_body() -> None:
    """As in ``persona-mw serve``: X-Persona-User (as the proxy recorded the request's headers,
    any case) wins over ``user`` and ``metadata.user_id``."""
    data = {
        "user": "ada",
        "metadata": {"user_id": "bob", "headers": {"x-persona-user": "meta-copy"}},
        "proxy_server_request": {"headers": {USER_HEADER.lower(): "carol"}},
    }
    assert resolve_user(data, "owner", "end") == "carol"
    del data["proxy_server_request"]
    assert resolve_user(data, "owner", "end") == "meta-copy"


def test_forget_user_leaves_no_id_to_forward() -> None:
    data: dict[str, Any] = {
        "user": "ada",
        "metadata": {"user_id": "ada", "tags": ["t"]},
        "headers": {"X-Persona-User": "ada", "x-trace": "1"},
    }
    forget_user(data)
    assert data == {"metadata": {"tags": ["t"]}, "headers": {"x-trace": "1"}}


def test_call_types_come_as_enum_or_string() -> None:
    from litellm.types.utils import CallTypes

    assert call_type_name(CallTypes.aresponses) == call_type_name("aresponses") == "aresponses"


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


@pytest.mark.parametrize(
    ("routes", "match"),
    [(["acompletion"], "cannot be unchecked"), ("aembedding", "a list of LiteLLM call types")],
)
def test_chat_completions_cannot_be_left_unchecked(routes: Any, match: str) -> None:
    from persona_mw_litellm import PersonaGuardrail

    from persona_mw import ConfigError, Middleware

    with pytest.raises(ConfigError, match=match):
        PersonaGuardrail(
            persona_unchecked_routes=routes, persona_log="none", middleware=Middleware()
        )
