"""PersonaliseStage on a CallContext, with real LiteLLM for model facts, token counts and the
model call (a local OpenAI-style server via persona_mw.testing, or ``mock_response``)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import pytest

from persona_mw import MemoryProfileStore, Middleware
from persona_mw.llm import import_litellm
from persona_mw.personalise import (
    REDUCED_INSTRUCTION,
    PersonalInstruction,
    PersonaliseConfig,
    PersonaliseStage,
    supports_system_role,
    token_counter_for,
)
from persona_mw.testing import FakeOpenAIServer
from persona_mw.types import CallContext, Message

from .helpers import (
    MINOR,
    NO_SYSTEM_MODEL,
    SYSTEM_MODEL,
    TIER1,
    TIER2,
    TIERS,
    added_text,
    block,
    context,
    profile,
)

APP = {"role": "system", "content": "You are HelpBot."}
ASK = {"role": "user", "content": "How do I sleep better?"}


async def _run(ctx: CallContext, config: PersonaliseConfig | None = None) -> CallContext:
    await PersonaliseStage(config=config)(ctx)
    return ctx


def test_litellm_and_we_agree_on_the_system_role() -> None:
    """The folding test model really lacks a system role according to LiteLLM; a model LiteLLM
    does not know is assumed to have one (LiteLLM itself answers False for it)."""
    litellm = import_litellm()
    ask = litellm.supports_system_messages
    assert ask(model=NO_SYSTEM_MODEL, custom_llm_provider=None) is False
    assert ask(model=SYSTEM_MODEL, custom_llm_provider=None) is True
    assert supports_system_role(NO_SYSTEM_MODEL) is False
    assert supports_system_role(SYSTEM_MODEL) is True
    assert supports_system_role("openai/gpt-4o-mini") is True
    assert supports_system_role("persona-test/unknown-model") is True


@pytest.mark.parametrize(
    ("model", "uses_litellm"),
    [(SYSTEM_MODEL, True), ("openai/gpt-4o-mini", True), ("my-router-alias", False)],
)
def test_token_counter_for(model: str, uses_litellm: bool) -> None:
    text = "Reply in the language with BCP 47 tag es. " * 5
    litellm_count = import_litellm().token_counter(model=model, text=text)
    estimate = (len(text) + 3) // 4
    assert litellm_count != estimate  # otherwise the test could not tell them apart
    assert token_counter_for(model)(text) == (litellm_count if uses_litellm else estimate)


async def test_no_consent_no_instructions_no_change() -> None:
    ctx = context(profile(consent={}), [APP, ASK])
    before = ctx.prompt_messages
    await _run(ctx)
    assert ctx.prompt_messages is before and ctx.prompt_messages == [APP, ASK]
    assert ctx.exposure.parts == set() and ctx.exposure.instruction_tokens == 0
    assert not ctx.exposure.reduced and "personalise" not in ctx.state


async def test_no_consent_still_places_the_tier_instructions() -> None:
    ctx = await _run(context(profile(consent={}), [APP, ASK], instructions=TIERS))
    system = ctx.prompt_messages[0]["content"]
    assert TIER1.text in system and TIER2.text in system and "Ana" not in system
    assert "<persona-mw:personalisation>" not in system
    assert ctx.exposure.parts == set() and ctx.exposure.instruction_tokens == 0


async def test_deployer_switch_off_uses_no_profile() -> None:
    ctx = await _run(context(profile(), [ASK]), PersonaliseConfig(enabled=False))
    assert ctx.prompt_messages == [ASK] and ctx.exposure.parts == set()


async def test_withdrawn_consent_removes_an_old_block_on_replay() -> None:
    first = await _run(context(profile(), [APP, ASK]))
    replay = [*first.prompt_messages, {"role": "assistant", "content": "ok"}, ASK]
    ctx = await _run(context(profile(consent={}), replay))
    assert ctx.prompt_messages == [APP, ASK, {"role": "assistant", "content": "ok"}, ASK]


async def test_full_profile_exposure_and_app_message_kept() -> None:
    ctx = context(profile(), [APP, ASK], instructions=(*TIERS, MINOR))
    original = copy.deepcopy(ctx.messages)
    messages_list = ctx.messages
    await _run(ctx)
    assert ctx.messages is messages_list and ctx.messages == original  # never mutated
    system = ctx.prompt_messages[0]["content"]
    assert ctx.prompt_messages[1:] == [ASK]
    assert system.index(TIER1.text) < system.index("You are HelpBot.") < system.index("Style:")
    assert ctx.exposure.parts == {
        "style",
        "topics_to_avoid",
        "own_rules",
        "preferences",
        "memory",
        "name",
    }
    instruction = ctx.state["personalise"]
    assert isinstance(instruction, PersonalInstruction)
    counted = import_litellm().token_counter(model=SYSTEM_MODEL, text=instruction.personal_text)
    assert ctx.exposure.instruction_tokens == counted > 0
    assert not ctx.exposure.reduced


async def test_memory_needs_its_own_consent() -> None:
    prof = profile(consent={"personalisation": True, "memory": False})
    ctx = await _run(context(prof, [ASK]))
    assert "memory" not in ctx.exposure.parts and "name" not in ctx.exposure.parts
    assert "night-shift" not in added_text(ctx.prompt_messages)
    assert '"Ana"' not in added_text(ctx.prompt_messages)


@pytest.mark.parametrize("via", ["ladder", "profile"])
async def test_reduced_mode_is_recorded(via: str) -> None:
    prof = profile(adjustable={"reduced_personalisation": True}) if via == "profile" else profile()
    ctx = await _run(context(prof, [ASK], reduced=via == "ladder"))
    text = added_text(ctx.prompt_messages)
    assert ctx.exposure.reduced and REDUCED_INSTRUCTION in text
    assert '"Ana"' not in text and "night-shift" not in text
    assert {"memory", "name"}.isdisjoint(ctx.exposure.parts) and "style" in ctx.exposure.parts


async def test_reduced_mode_applies_without_consent() -> None:
    """The neutral-persona safeguard is a dependence measure, not personalisation."""
    ctx = await _run(context(profile(consent={}), [ASK], reduced=True))
    assert REDUCED_INSTRUCTION in ctx.prompt_messages[0]["content"]
    assert ctx.exposure.parts == set()


async def test_budget_through_the_stage_counts_with_litellm() -> None:
    ctx = await _run(
        context(profile(), [ASK], instructions=TIERS), PersonaliseConfig(budget_tokens=220)
    )
    instruction = ctx.state["personalise"]
    count = import_litellm().token_counter
    total = count(model=SYSTEM_MODEL, text=instruction.bounds_text) + count(
        model=SYSTEM_MODEL, text=instruction.personal_text
    )
    assert instruction.dropped and total <= 220 and not instruction.over_budget
    assert ctx.exposure.parts == {
        "style",
        "topics_to_avoid",
        "own_rules",
        "preferences",
        "memory",
        "name",
    } - set(instruction.dropped)


async def test_folds_for_a_model_without_a_system_role() -> None:
    ctx = await _run(context(profile(), [APP, ASK], model=NO_SYSTEM_MODEL, instructions=TIERS))
    assert [m["role"] for m in ctx.prompt_messages] == ["user"]
    content = ctx.prompt_messages[0]["content"]
    assert content.startswith("<persona-mw:folded>\n<persona-mw:bounds>")
    assert content.endswith("</persona-mw:folded>\n\nHow do I sleep better?")
    assert "You are HelpBot." in content
    # LiteLLM accepts the result for that model (offline, mock_response).
    reply = await import_litellm().acompletion(
        model=NO_SYSTEM_MODEL, messages=ctx.prompt_messages, mock_response="ok"
    )
    assert reply.choices[0].message.content == "ok"


@pytest.mark.parametrize("model", [SYSTEM_MODEL, NO_SYSTEM_MODEL])
async def test_replay_and_determinism(model: str) -> None:
    """The same profile version gives byte-identical prompts; feeding a personalised prompt back
    in (a replayed conversation) gives the same prompt, not a doubled one."""
    one = await _run(context(profile(), [APP, ASK], model=model, instructions=TIERS))
    two = await _run(context(profile(), [APP, ASK], model=model, instructions=TIERS))
    assert json.dumps(one.prompt_messages) == json.dumps(two.prompt_messages)
    replayed = await _run(context(profile(), one.prompt_messages, model=model, instructions=TIERS))
    assert json.dumps(replayed.prompt_messages) == json.dumps(one.prompt_messages)
    assert added_text(replayed.prompt_messages).count("<persona-mw:bounds>") == 1


async def test_a_new_profile_version_replaces_the_old_block() -> None:
    one = await _run(context(profile(), [ASK]))
    newer = profile(version=8, own_rules="Mention ZEBRA-TWO.")
    two = await _run(
        context(newer, [*one.prompt_messages, {"role": "assistant", "content": "."}, ASK])
    )
    text = json.dumps(two.prompt_messages)
    assert "ZEBRA-TWO" in text and "ZEBRA-ONE" not in text and text.count("<user-data>") == 1


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


async def test_through_the_middleware_to_a_real_http_model(upstream: FakeOpenAIServer) -> None:
    """The whole path: Middleware → PersonaliseStage → LiteLLM → HTTP. What the model received
    is the personalised prompt; what the app passed is unchanged."""
    store = MemoryProfileStore()
    await store.put(profile())
    mw = Middleware(store=store, input_stages=[PersonaliseStage()])
    app_messages: list[Message] = [dict(APP), dict(ASK)]
    await mw.acompletion(
        user="ana",
        model="openai/fake",
        messages=app_messages,
        api_base=upstream.base_url,
        api_key="test-key",
    )
    seen = upstream.requests[-1]["messages"]
    assert app_messages == [APP, ASK]
    assert seen[0]["role"] == "system" and seen[-1] == ASK
    assert block(seen[0]["content"], "persona-mw:personalisation")
    assert 'BCP 47 tag \\"es\\"' in json.dumps(seen) and "ZEBRA-ONE" in seen[0]["content"]
    await mw.aclose()
