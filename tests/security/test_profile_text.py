"""Profile free text (own rules, display name, self-description, topics to avoid) reaches the
model in the system prompt: the input rules check it when it is written (a 422 naming the field
and the rule) and redact it before it enters the prompt (for text stored before, or by a path
that does not check)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from sec_helpers import KEYS, bearer, write_server_config

from persona_mw import Middleware
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.personalise import PersonaliseStage
from persona_mw.profile import Profile
from persona_mw.stores.memory import MemoryProfileStore
from persona_mw.testing import FakeOpenAIServer

CARD = "4111 1111 1111 1111"
CONSENT = {"personalisation": True, "memory": True}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    upstream: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("profile-text")
    policy = tmp / "policy.yaml"
    policy.write_text("version: profile-text\npacks: [pii, minor-safety]\n")
    path = write_server_config(
        tmp / "persona.yaml", upstream.base_url, bounds={"policies": [str(policy)]}
    )
    with ServerThread(create_app(load_server_config(path))) as running:
        yield running


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"own_rules": f"bill my card {CARD} when asked"}, "own_rules"),
        ({"self_description": "reach me at ada@example.com"}, "self_description"),
        ({"display_name": "ada@example.com"}, "display_name"),
        ({"topics_to_avoid": ["football", f"card {CARD}"]}, "topics_to_avoid.1"),
    ],
)
@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_pii_in_profile_text_is_refused_with_the_field_and_the_rule(
    server: ServerThread, method: str, body: dict[str, Any], field: str
) -> None:
    url = server.base_url + "/v1/users/ada/profile"
    before = httpx.get(url, headers=bearer(KEYS.ada)).json()
    response = httpx.request(method, url, json=body, headers=bearer(KEYS.ada))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert field in error["message"] and "'pii'" in error["message"]
    assert "1111" not in response.text and "ada@example.com" not in response.text
    assert httpx.get(url, headers=bearer(KEYS.ada)).json() == before  # nothing written


def test_a_minors_profile_text_is_checked_against_the_minor_rules(server: ServerThread) -> None:
    url = server.base_url + "/v1/users/kit/profile"
    admin = bearer(KEYS.admin)
    assert httpx.put(url, json={"age_band": "13_15"}, headers=admin).status_code == 200
    refused = httpx.patch(url, json={"own_rules": "talk about sex with me"}, headers=admin)
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "own_rules"
    assert "minor-safety.sexual" in refused.json()["error"]["message"]


def test_clean_profile_text_is_accepted(server: ServerThread) -> None:
    url = server.base_url + "/v1/users/ada/profile"
    ok = httpx.patch(url, json={"own_rules": "Be brief."}, headers=bearer(KEYS.ada))
    assert ok.status_code == 200, ok.text


def test_only_the_fields_a_write_changes_are_checked() -> None:
    """Text stored before the check existed does not stand in the way of an unrelated change;
    the prompt still gets it redacted (below)."""
    stage = BoundsInputStage(policy=policy_from_dict({"version": "t", "packs": ["pii"]}))
    old = Profile(user_id="ada", own_rules=f"card {CARD}")
    new = old.model_copy(update={"style": {"tone": "direct"}})
    assert stage.check_profile_text(new, since=old) == []
    assert [f.field for f in stage.check_profile_text(new)] == ["own_rules"]


async def test_stored_pii_is_redacted_before_it_enters_the_prompt(
    upstream: FakeOpenAIServer,
) -> None:
    """A profile written before the check (or by ``persona-mw profile set``) still carries the
    card number: the prompt gets the redacted text, the stored profile is untouched."""
    policy = policy_from_dict({"version": "profile-text", "packs": ["pii", "minor-safety"]})
    store = MemoryProfileStore()
    stored = Profile(
        user_id="ada",
        own_rules=f"my card is {CARD}, keep it handy",
        self_description="write to ada@example.com",
        display_name="Ada",
        topics_to_avoid=[f"card {CARD}"],
        consent=CONSENT,
    )
    await store.put(stored)
    await store.put(
        Profile(user_id="kit", age_band="13_15", self_description="I like porn", consent=CONSENT)
    )
    mw = Middleware(
        store=store,
        input_stages=[BoundsInputStage(policy=policy), PersonaliseStage()],
        output_stages=[BoundsOutputStage(policy=policy)],
    )
    for user in ("ada", "kit"):
        before = len(upstream.requests)
        await mw.acompletion(
            user=user,
            model="openai/fake",
            messages=[{"role": "user", "content": "hello"}],
            api_base=upstream.base_url,
            api_key="x",
        )
        seen = json.dumps(upstream.requests[before]["messages"])
        assert "1111" not in seen and "ada@example.com" not in seen and "porn" not in seen, seen
    ada = json.dumps(upstream.requests[-2]["messages"])
    assert "keep it handy" in ada and "removed]" in ada  # the rest of the text is still used
    assert (await store.get("ada")) == stored.model_copy(update={"version": 1})


async def test_a_profile_is_redacted_on_every_call_and_rechecked_when_it_changes(
    upstream: FakeOpenAIServer,
) -> None:
    """The stage keeps a stored profile's checks while it is the same object: every call of
    the profile is redacted as the first was, and a changed profile is checked anew (a stale
    check would let the new field's card number through)."""
    policy = policy_from_dict({"version": "profile-text", "packs": ["pii"]})
    store = MemoryProfileStore()
    await store.put(Profile(user_id="ada", own_rules=f"card {CARD}", consent=CONSENT))
    mw = Middleware(store=store, input_stages=[BoundsInputStage(policy=policy), PersonaliseStage()])

    async def prompt() -> str:
        before = len(upstream.requests)
        await mw.acompletion(
            user="ada",
            model="openai/fake",
            messages=[{"role": "user", "content": "hello"}],
            api_base=upstream.base_url,
            api_key="x",
        )
        return json.dumps(upstream.requests[before]["messages"])

    for _ in range(3):
        seen = await prompt()
        assert "1111" not in seen and "card" in seen, seen
    other = "5500 0000 0000 0004"
    await store.put(
        Profile(user_id="ada", self_description=f"my card {other}", consent=CONSENT),
        expected_version=1,
    )
    seen = await prompt()
    assert "0004" not in seen and "my card" in seen, seen
