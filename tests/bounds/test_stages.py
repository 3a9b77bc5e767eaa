"""The bounds stages inside the real middleware, with LiteLLM's own mock responses as the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_mw import Middleware
from persona_mw.bounds import (
    BoundsConfig,
    BoundsInputStage,
    BoundsOutputStage,
    EffectivePolicy,
    bounds_stages,
    policy_from_dict,
)
from persona_mw.bounds.classifiers import Classifiers, ClassifierSettings
from persona_mw.profile import Profile
from persona_mw.stores.memory import MemoryProfileStore
from persona_mw.types import CallContext

MODEL = "openai/fake"
POLICY = policy_from_dict(
    {
        "version": "stages-1",
        "packs": ["pii", "crisis", "ai-disclosure", "minor-safety", "profanity"],
    }
)


class Collect:
    """A finish stage that keeps each call's context for the test to read."""

    name = "collect"

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []

    async def __call__(self, ctx: CallContext) -> None:
        self.contexts.append(ctx)


async def middleware(
    *profiles: Profile, policy: Any = POLICY, **stage_kw: Any
) -> tuple[Middleware, Collect]:
    store = MemoryProfileStore()
    for profile in profiles:
        await store.put(profile)
    collect = Collect()
    mw = Middleware(
        store=store,
        input_stages=[BoundsInputStage(policy=policy, **stage_kw)],
        output_stages=[BoundsOutputStage(policy=policy)],
        finish_stages=[collect],
    )
    return mw, collect


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be kind"}, {"role": "user", "content": text}]


async def test_input_block_answers_without_the_model() -> None:
    mw, collect = await middleware(Profile(user_id="kid", age_band="13_15"))
    response = await mw.acompletion(
        user="kid", model=MODEL, messages=ask("send nudes"), mock_response="MODEL"
    )
    choice = response.choices[0]
    assert choice.finish_reason == "content_filter"
    assert "can't talk about that here" in choice.message.content
    ctx = collect.contexts[0]
    assert ctx.outcome == "blocked"
    assert [(d.rule_id, d.tier, d.stage, d.detector, d.action) for d in ctx.decisions] == [
        ("minor-safety.sexual", 1, "input", "phrases", "block")
    ]
    assert isinstance(ctx.policy, EffectivePolicy)


async def test_same_words_pass_for_an_adult_and_are_redacted_as_profanity_only_on_output() -> None:
    mw, collect = await middleware(Profile(user_id="ada", age_band="18_plus"))
    response = await mw.acompletion(
        user="ada",
        model=MODEL,
        messages=ask("what is a nude in painting?"),
        mock_response="A nude, damn it.",
    )
    assert response.choices[0].message.content == "A nude, **** it."
    assert [d.rule_id for d in collect.contexts[0].decisions] == ["profanity"]


async def test_crisis_input_appends_resources_counts_a_referral_and_instructs() -> None:
    mw, collect = await middleware()
    response = await mw.acompletion(
        user="sam",
        model=MODEL,
        messages=ask("I think I want to end my life"),
        mock_response="I'm here with you.",
    )
    text = response.choices[0].message.content
    assert text.startswith("I'm here with you.\n\n")
    assert "988" in text and "116 123" in text
    ctx = collect.contexts[0]
    referrals = [d for d in ctx.decisions if d.rule_id.startswith("crisis")]
    # the phrase rule and the classifier both fired: two decisions, one notice, one instruction
    assert sorted((d.rule_id, d.tier, d.action, d.stage) for d in referrals) == [
        ("crisis.ideation", 1, "append", "input"),
        ("crisis.ideation-model", 1, "append", "input"),
    ]
    [notice] = ctx.notices
    assert notice.source in ("crisis.ideation", "crisis.ideation-model")
    assert [i.source for i in ctx.instructions] == ["ai-disclosure.not-human", notice.source]
    assert all(i.tier == 1 for i in ctx.instructions)


async def test_pii_in_input_is_redacted_before_the_model_and_app_messages_kept() -> None:
    mw, collect = await middleware()
    messages = ask("my card is 4111 1111 1111 1111, mail ada@example.com")
    await mw.acompletion(user="u", model=MODEL, messages=messages, mock_response="ok")
    ctx = collect.contexts[0]
    assert ctx.prompt_messages[-1]["content"] == "my card is [card removed], mail [email removed]"
    assert messages[-1]["content"] == "my card is 4111 1111 1111 1111, mail ada@example.com"
    assert ctx.messages is messages


REPLY = "Sure! Well shit, call +44 20 7946 0958 or write to bob@example.org. Bye."
REDACTED = "Sure! Well ****, call [phone removed] or write to [email removed]. Bye."


@pytest.mark.parametrize("stream", [False, True])
async def test_output_redaction_same_streamed_or_not(stream: bool) -> None:
    mw, collect = await middleware()
    if stream:
        chunks = [
            c
            async for c in mw.astream(
                user="u", model=MODEL, messages=ask("hi"), mock_response=REPLY
            )
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        response = await mw.acompletion(
            user="u", model=MODEL, messages=ask("hi"), mock_response=REPLY
        )
        text = response.choices[0].message.content
    assert text == REDACTED
    decisions = {
        d.rule_id: [REPLY[s.start : s.end] for s in d.spans] for d in collect.contexts[0].decisions
    }
    assert decisions == {"profanity": ["shit"], "pii": ["+44 20 7946 0958", "bob@example.org"]}


@pytest.mark.parametrize("stream", [False, True])
async def test_output_block_ends_with_content_filter(stream: bool) -> None:
    reply = "Here is a long and friendly preamble. " * 8 + "Here is how to kill yourself: step one."
    mw, collect = await middleware()
    if stream:
        chunks = [
            c
            async for c in mw.astream(
                user="u", model=MODEL, messages=ask("hi"), mock_response=reply
            )
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        response = await mw.acompletion(
            user="u", model=MODEL, messages=ask("hi"), mock_response=reply
        )
        text, finish = response.choices[0].message.content, response.choices[0].finish_reason
    assert finish == "content_filter"
    assert "kill yourself" not in text and "step one" not in text
    assert "988" in text  # the rule's message
    ctx = collect.contexts[0]
    assert ctx.outcome == "filtered"
    assert [(d.rule_id, d.action, d.stage) for d in ctx.decisions] == [
        ("crisis.methods", "block", "output")
    ]


JUDGE_POLICY = {
    "rules": [
        {
            "id": "judge.weapons",
            "tier": 1,
            "stage": "input",
            "detector": {
                "kind": "judge",
                "categories": ["S9: Indiscriminate weapons"],
                "timeout_s": 0.5,
            },
            "message": "I can't help with weapons.",
        },
        {
            "id": "judge.spam",
            "tier": 2,
            "stage": "input",
            "detector": {"kind": "judge", "categories": ["S99: Spam"], "timeout_s": 0.5},
            "action": "log",
        },
    ]
}


#: The judge flags both messages of ``ask``. Its verdict comes while the model already has the
#: prompt, so the system message can no longer be withheld: a block in either blocks the reply.
FLAGGED_BOTH = [
    ("judge.spam", "log"),
    ("judge.spam", "log"),
    ("judge.weapons", "block"),
    ("judge.weapons", "block"),
]


@pytest.mark.parametrize(
    ("judge_kwargs", "reply", "actions"),
    [
        ({"mock_response": "safe"}, "MODEL", []),
        (
            {"mock_response": "unsafe\nS9"},
            "I can't help with weapons.",
            FLAGGED_BOTH,
        ),
        # the judge times out: tier 1 fails closed (block), tier 2 fails open (logged, passes)
        (
            {"mock_response": "safe", "mock_delay": 2},
            "I can't help with weapons.",
            FLAGGED_BOTH,
        ),
        (
            {"mock_response": "maybe?"},
            "I can't help with weapons.",
            FLAGGED_BOTH,
        ),
    ],
)
async def test_llm_judge_through_litellm(
    judge_kwargs: dict[str, Any], reply: str, actions: list[tuple[str, str]]
) -> None:
    mw, collect = await middleware(
        policy=policy_from_dict(JUDGE_POLICY),
        classifiers=Classifiers(ClassifierSettings(kwargs=judge_kwargs)),
    )
    response = await mw.acompletion(
        user="u", model=MODEL, messages=ask("how do I build it"), mock_response="MODEL"
    )
    assert response.choices[0].message.content == reply
    assert sorted((d.rule_id, d.action) for d in collect.contexts[0].decisions) == actions


async def test_judge_verdict_labels_the_span() -> None:
    mw, collect = await middleware(
        policy=policy_from_dict(JUDGE_POLICY),
        classifiers=Classifiers(ClassifierSettings(kwargs={"mock_response": "unsafe\nS9"})),
    )
    await mw.acompletion(user="u", model=MODEL, messages=ask("build it"), mock_response="MODEL")
    blocks = [
        d
        for d in collect.contexts[0].decisions
        if d.rule_id == "judge.weapons" and d.action == "block"
    ]
    assert {d.detector for d in blocks} == {"judge"}
    # one decision per message: the system message's 7 characters, the user's 8
    assert sorted((s.start, s.end, s.label) for d in blocks for s in d.spans) == [
        (0, 7, "S9"),
        (0, 8, "S9"),
    ]


def _broken_scorer(text: str) -> float:
    raise RuntimeError("scorer exploded")


@pytest.mark.parametrize(("on_error", "expect_block"), [("block", True), ("allow", False)])
async def test_failing_detector_follows_fail_mode_and_never_crashes(
    on_error: str, expect_block: bool
) -> None:
    policy = policy_from_dict(
        {
            "rules": [
                {
                    "id": "rel",
                    "tier": 2,
                    "stage": "output",
                    "detector": {"kind": "relationship"},
                    "message": "withheld",
                    "on_error": on_error,
                }
            ]
        }
    )
    mw, collect = await middleware(policy=policy, scorer=_broken_scorer)
    response = await mw.acompletion(
        user="u", model=MODEL, messages=ask("hi"), mock_response="Hello friend."
    )
    text = response.choices[0].message.content
    decision = collect.contexts[0].decisions[0]
    assert decision.detector == "relationship"
    assert decision.spans[0].label == "detector-error"
    if expect_block:
        assert (text, decision.action) == ("withheld", "block")
        assert "fail-closed" in (decision.reason or "")
    else:
        assert (text, decision.action) == ("Hello friend.", "log")
        assert "fail-open" in (decision.reason or "")


def test_bounds_stages_from_config(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("version: cfg-1\npacks: [pii]\n")
    config = BoundsConfig(
        policies=("policies/p.yaml",), hold_back_margin=16, classifier_timeout_s=1.5
    )
    check_in, check_out = bounds_stages(config, base_dir=tmp_path)
    assert check_in.policy is check_out.policy
    assert check_in.policy.version == "cfg-1"
    assert (check_out.hold_back_margin, check_in.classifiers.settings.timeout_s) == (16, 1.5)
    baseline_in, _ = bounds_stages()
    assert {r.id.split(".")[0] for r in baseline_in.policy.rules} == {
        "crisis",
        "ai-disclosure",
        "minor-safety",
    }
    with pytest.raises(ValueError):
        BoundsConfig(hold_back_margin=65)
