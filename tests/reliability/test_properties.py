"""Hypothesis properties over the real code:

(a) no tier-2 or tier-3 change (random profile bounds, adjustable choices, user-enabled packs,
    age) loosens a tier-1 rule;
(b) any chunking of a stream gives the same reply as the whole text, end to end through
    ``Middleware.astream`` vs ``Middleware.acompletion`` with the real output stages;
(c) the profile sanitiser is idempotent;
(d) random YAML / JSON never crashes the policy loader (only PolicyError / ConfigError) or
    ``parse_profile`` (only ProfileValidationError).

Example counts are bounded so the file runs in CI in well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_mw import (
    ConfigError,
    Middleware,
    Profile,
    ProfileValidationError,
    parse_profile,
)
from persona_mw.bounds import (
    USER_PACKS,
    BoundsConfig,
    Policy,
    apply_redactions,
    bounds_stages,
    load_policy,
    policy_from_dict,
    resolve,
)
from persona_mw.personalise import sanitise_user_text

ROOT = Path(__file__).resolve().parents[2]
POLICIES = {p.stem: p for p in (ROOT / "examples" / "policies").glob("*.yaml")}
CRISIS_TEXTS = ["I want to end my life", "i am thinking about suicide", "I'm going to kill myself"]

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _policy(name: str) -> Policy:
    return load_policy(POLICIES[name])


# -- (a) tier 1 holds whatever tiers 2 and 3 say -------------------------------------------------

_ACTIONS = ["off", "log", "notify", "append", "redact", "block", "on", "", "none"]


@st.composite
def hostile_tier3(draw: st.DrawFn, policy: Policy) -> Profile:
    """A profile that tries every tier-3 lever, including naming tier-1 rules."""
    rule_ids = [r.id for r in policy.rules]
    option = st.sampled_from(
        [*rule_ids, "profanity", "crisis", "ai-disclosure", "minor-safety", "pii", "threshold"]
    )
    value = st.one_of(
        st.sampled_from(_ACTIONS), st.integers(-1000, 1000), st.booleans(), st.text(max_size=20)
    )
    adjustable = draw(st.dictionaries(option, value, max_size=8))
    packs = draw(
        st.lists(
            st.one_of(
                st.sampled_from([*USER_PACKS, "crisis", "minor-safety"]),
                st.text(min_size=1, max_size=12),
            ),
            max_size=5,
        )
    )
    phrases = draw(st.lists(st.text(min_size=1, max_size=30), max_size=5))
    age = draw(st.sampled_from(["unknown", "under_13", "13_15", "16_17", "18_plus"]))
    data = {
        "user_id": "prop-user",
        "adjustable": adjustable,
        "bounds": {"enable_packs": packs, "block_phrases": phrases},
        "age_band": age,
        "known_minor": draw(st.booleans()),
    }
    try:
        return parse_profile(data)
    except ProfileValidationError:
        # the schema refused some value (blank text, long string): keep the levers it accepts
        data["bounds"] = {"enable_packs": [p for p in packs if p.strip()][:10], "block_phrases": []}
        data["adjustable"] = {
            k: v
            for k, v in adjustable.items()
            if k.strip() and (not isinstance(v, str) or len(v) <= 100)
        }
        return parse_profile(data)


def _tier1(profile: Profile, policy: Policy) -> dict[str, Any]:
    effective = resolve(policy, profile)
    return {r.rule.id: r.rule for r in effective.rules if r.rule.tier == 1}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_no_tier2_or_tier3_choice_loosens_tier1(name: str) -> None:
    policy = _policy(name)

    @FAST
    @given(profile=hostile_tier3(policy))
    def check(profile: Profile) -> None:
        baseline = Profile(
            user_id="prop-user", age_band=profile.age_band, known_minor=profile.known_minor
        )
        in_force = _tier1(profile, policy)
        expected = _tier1(baseline, policy)
        assert expected, "every shipped example policy has tier-1 rules"
        for rule_id, rule in expected.items():
            assert in_force.get(rule_id) == rule, f"tier-1 rule {rule_id} changed or dropped"
        effective = resolve(policy, profile)
        for text in CRISIS_TEXTS:
            hits = effective.input.scan(text)
            assert any(h.rule.rule.tier == 1 and h.rule.rule.id.startswith("crisis") for h in hits)

    check()


# -- (b) any chunking of a stream gives the same result as the whole text ------------------------

_PIECES = [
    "hello ",
    "shit ",
    "fuck",
    "ing ",
    "call me at ",
    "+44 7700 900123",
    " or mail ",
    "zed@example.org",
    ". ",
    "I love you ",
    "kill myself ",
    "\n",
    "é",
    "  ",
]


class ChunkedModel:
    """A fake *model* (the LLM edge, not our code): answers ``text`` whole, or streamed in the
    given cuts, as real LiteLLM response objects."""

    def __init__(self, text: str, cuts: list[int]) -> None:
        self.text = text
        self.cuts = sorted({c for c in cuts if 0 < c < len(text)})

    async def acompletion(self, **kwargs: Any) -> Any:
        from litellm import ModelResponse
        from litellm.types.utils import Choices, Message

        return ModelResponse(
            model=kwargs["model"],
            choices=[
                Choices(
                    index=0,
                    message=Message(role="assistant", content=self.text),
                    finish_reason="stop",
                )
            ],
        )

    async def astream(self, **kwargs: Any) -> AsyncIterator[Any]:
        from litellm import ModelResponseStream
        from litellm.types.utils import Delta, StreamingChoices

        bounds = [0, *self.cuts, len(self.text)]
        for a, b in itertools.pairwise(bounds):
            yield ModelResponseStream(
                id="chatcmpl-x",
                model=kwargs["model"],
                choices=[StreamingChoices(index=0, delta=Delta(content=self.text[a:b]))],
            )
        yield ModelResponseStream(
            id="chatcmpl-x",
            model=kwargs["model"],
            choices=[StreamingChoices(index=0, delta=Delta(), finish_reason="stop")],
        )


@st.composite
def text_and_cuts(draw: st.DrawFn) -> tuple[str, list[int]]:
    text = "".join(draw(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12)))
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=len(text)))
    return text, cuts


@pytest.mark.parametrize("name", ["childrens-tutoring", "customer-support"])
def test_any_chunking_gives_the_same_reply_end_to_end(name: str) -> None:
    check_input, check_output = bounds_stages(BoundsConfig(policies=(str(POLICIES[name]),)))
    minor = Profile(user_id="kid", age_band="13_15")

    async def both(text: str, cuts: list[int]) -> tuple[Any, Any]:
        mw = Middleware(
            llm=ChunkedModel(text, cuts),
            input_stages=[check_input],
            output_stages=[check_output],
        )
        await mw.store.put(minor)
        call = {"user": "kid", "model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        whole = await mw.acompletion(**call)
        parts, finish = [], None
        async for chunk in mw.astream(**call):
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        choice = whole.choices[0]
        return (choice.message.content, choice.finish_reason), ("".join(parts), finish)

    scanner = resolve(check_output.policy, minor).output

    @settings(max_examples=80, deadline=None)
    @given(case=text_and_cuts())
    def check(case: tuple[str, list[int]]) -> None:
        whole, streamed = asyncio.run(both(*case))
        if streamed == whole:
            return
        # A blocked stream has released the settled text before the block (it cannot take it
        # back): the whole reply's text with that inserted, and nothing from the block on.
        assert whole[1] == streamed[1] == "content_filter"
        text = case[0]
        hits = scanner.scan(text)
        first = min(h.span.start for h in hits if h.action == "block")
        clean = apply_redactions(text[:first], [h for h in hits if h.span.end <= first])
        w, s = whole[0], streamed[0]
        extra = len(s) - len(w)
        assert any(
            s.startswith(w[:n])
            and s.endswith(w[n:])
            and s[n : n + extra].endswith("\n\n")
            and clean.startswith(s[n : n + extra - 2])
            for n in range(len(w) + 1)
        ), (whole, streamed)

    check()


# -- (c) the sanitiser is idempotent -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300),
    max_chars=st.one_of(st.none(), st.integers(10, 400)),
)
def test_sanitiser_is_idempotent(text: str, max_chars: int | None) -> None:
    once = sanitise_user_text(text, max_chars=max_chars)
    assert sanitise_user_text(once, max_chars=max_chars) == once
    if max_chars is not None:
        assert len(once) <= max_chars


# -- (d) random input never crashes the loaders --------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "version",
        "packs",
        "rules",
        "overrides",
        "id",
        "tier",
        "stage",
        "detector",
        "kind",
        "phrases",
        "action",
        "message",
        "adjustable",
        "pattern",
        "name",
        "threshold",
        "values",
        "range",
        "option",
        "eligibility",
        "interval_hours",
        "instruction",
        "fail",
    ]
)
_policyish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.sampled_from(
        [
            "crisis",
            "pii",
            "profanity",
            "block",
            "redact",
            "input",
            "output",
            "both",
            "phrases",
            "regex",
            "(",
            "[a-",
            "adults_only",
            "off",
            "x",
        ]
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(_json, _policyish))
def test_random_policy_data_gives_only_policy_errors(data: Any) -> None:
    with contextlib.suppress(ConfigError):  # PolicyError is a ConfigError
        policy_from_dict(data)


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=200),
        _policyish.map(lambda d: yaml.safe_dump(d)),
        st.sampled_from(["{", "- [", ": :", "!!python/object:os.system ['x']", "\t- a", "&a *a"]),
    )
)
def test_random_yaml_files_give_only_policy_errors(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    try:
        load_policy(handle.name)
    except ConfigError:
        pass
    finally:
        Path(handle.name).unlink()


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        _json,
        _json.map(json.dumps),
        st.text(max_size=100),
        st.binary(max_size=60).map(lambda b: b.decode("utf-8", "replace").encode()),
        st.fixed_dictionaries(
            {"user_id": st.text(max_size=300)},
            optional={
                "style": _json,
                "adjustable": _json,
                "limits": _json,
                "bounds": _json,
                "timezone": st.text(max_size=30),
                "age_band": _json,
                "consent": _json,
                "own_rules": _json,
            },
        ),
    )
)
def test_random_profile_json_gives_only_validation_errors(data: Any) -> None:
    with contextlib.suppress(ProfileValidationError):
        parse_profile(data)


def test_profile_bytes_that_are_not_utf8_give_a_validation_error() -> None:
    with pytest.raises(ProfileValidationError):
        parse_profile(b"\x80\xff{}")
