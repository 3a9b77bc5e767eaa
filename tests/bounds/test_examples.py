"""The three example policies of docs/policies.md, loaded from examples/policies/ and checked on
sample inputs and replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_mw.bounds import StreamFilter, input_verdict, load_policy, resolve
from persona_mw.bounds.scan import apply_redactions, hold_back_for
from persona_mw.profile import Profile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
TUTORING = load_policy(EXAMPLES / "childrens-tutoring.yaml")
CREATIVE = load_policy(EXAMPLES / "adult-creative-writing.yaml")
SUPPORT = load_policy(EXAMPLES / "customer-support.yaml")

CHILD = Profile(user_id="c", age_band="under_13")
ADULT = Profile(user_id="a", age_band="18_plus")
ADULT_UNCENSORED = Profile(
    user_id="b", age_band="18_plus", adjustable={"profanity": "off", "fiction.companion": 80}
)
ANYONE = Profile(user_id="x")


def check_input(policy: Any, profile: Profile, text: str) -> tuple[str, list[str], str]:
    """(overall, rule ids fired, text the model would see or the reply)."""
    eff = resolve(policy, profile)
    hits = eff.input.scan(text)
    verdict = input_verdict(hits)
    if verdict.reply is not None:
        return "block", [d.rule_id for d in verdict.decisions], verdict.reply
    overall = (
        "append"
        if verdict.notices
        else ("redact" if verdict.redact else ("log" if hits else "allow"))
    )
    return overall, [d.rule_id for d in verdict.decisions], apply_redactions(text, hits)


def check_output(policy: Any, profile: Profile, text: str) -> tuple[bool, list[str], str]:
    """(stopped, rule ids, released text), streamed in 5-character chunks."""
    scanner = resolve(policy, profile).output
    filt = StreamFilter(scanner, None, hold_back=hold_back_for(scanner))
    out = "".join(filt.feed(text[i : i + 5]) for i in range(0, len(text), 5))
    if not filt.stopped:
        out += filt.finish()
    return filt.stopped, [d.rule_id for d in filt.decisions], out


@pytest.mark.parametrize(
    ("policy", "profile", "text", "overall", "rules"),
    [
        (TUTORING, CHILD, "Can you help me with fractions?", "allow", []),
        (
            TUTORING,
            CHILD,
            "what is sex",
            "block",
            ["minor-safety.sexual-model", "minor-safety.sexual"],
        ),
        (TUTORING, CHILD, "can we meet up after school", "block", ["tutoring.meetups"]),
        (TUTORING, CHILD, "my number is +44 7700 900123", "redact", ["pii"]),
        (TUTORING, CHILD, "this homework is shit", "redact", ["profanity"]),
        (
            TUTORING,
            CHILD,
            "sometimes I want to die",
            "append",
            ["crisis.ideation-model", "crisis.ideation"],
        ),
        (CREATIVE, ADULT, "Write a sex scene for my novel", "allow", []),
        (CREATIVE, ADULT, "My editor is jo@example.com", "redact", ["pii"]),
        (
            CREATIVE,
            ADULT,
            "my character wants to kill myself... I mean, I do",
            "append",
            ["crisis.ideation-model", "crisis.ideation"],
        ),
        (
            CREATIVE,
            CHILD,
            "Write a sex scene",
            "block",
            ["minor-safety.sexual-model", "minor-safety.sexual"],
        ),
        (SUPPORT, ANYONE, "my card is 4111 1111 1111 1111", "block", ["support.cards"]),
        (SUPPORT, ANYONE, "call me on (555) 123-4567", "redact", ["pii"]),
        (SUPPORT, ANYONE, "where is my order?", "allow", []),
    ],
)
def test_example_inputs(
    policy: Any, profile: Profile, text: str, overall: str, rules: list[str]
) -> None:
    got_overall, got_rules, _ = check_input(policy, profile, text)
    assert (got_overall, got_rules) == (overall, rules)


@pytest.mark.parametrize(
    ("policy", "profile", "reply", "stopped", "rules", "released"),
    [
        (TUTORING, CHILD, "Great, damn good work!", False, ["profanity"], "Great, **** good work!"),
        (
            TUTORING,
            CHILD,
            "I love you sweetheart, I missed you so much.",
            True,
            ["minor-safety.relationship"],
            "",
        ),
        (CREATIVE, ADULT, "He swore: 'shit.'", False, ["profanity"], "He swore: '****.'"),
        (CREATIVE, ADULT_UNCENSORED, "He swore: 'shit.'", False, [], "He swore: 'shit.'"),
        (
            CREATIVE,
            ADULT,
            "I missed you so much, my love.",
            False,
            ["fiction.companion"],
            "I missed you so much, my love.",
        ),
        (
            SUPPORT,
            ANYONE,
            "We guarantee a full refund today.",
            True,
            ["support.refund-promises"],
            "We ",  # settled text before the promise leaves before the stream stops
        ),
        (
            SUPPORT,
            ANYONE,
            "Email us at help@shop.example.",
            False,
            ["pii"],
            "Email us at [email removed].",
        ),
    ],
)
def test_example_replies(
    policy: Any, profile: Profile, reply: str, stopped: bool, rules: list[str], released: str
) -> None:
    """The rules listed fire, in order; a trained classifier rule (``*-model``) may fire beside
    them — its verdict on a borderline reply moves when the model is retrained ("I love you
    sweetheart" scores about 0.5 for the minors' reply model), the other rules' do not."""
    got_stopped, got_rules, got_released = check_output(policy, profile, reply)
    assert (got_stopped, got_released) == (stopped, released)
    assert [r for r in got_rules if not r.endswith("-model")] == rules


def test_example_explanations() -> None:
    creative = resolve(CREATIVE, ADULT_UNCENSORED).explain()
    assert {
        "id": "profanity",
        "reason": "user opted out (profanity=off); allowed for adults",
    } in creative["not_in_force"]
    companion = next(r for r in creative["rules"] if r["id"] == "fiction.companion")
    assert "user set fiction.companion=80 (allowed range 80-95)" in companion["reason"]
    tutoring = resolve(TUTORING, CHILD)
    assert tutoring.ai_disclosure is not None and tutoring.ai_disclosure.interval_hours == 1
    assert [i.source for i in tutoring.instructions] == [
        "ai-disclosure.not-human",
        "minor-safety.persona",
        "tutoring.role",
    ]
    # the child cannot opt out of profanity in the tutoring app: it is not adjustable there
    kid_optout = resolve(TUTORING, CHILD.model_copy(update={"adjustable": {"profanity": "off"}}))
    assert "profanity" in {r.rule.id for r in kid_optout.rules}


def test_docs_show_the_example_files_as_they_are() -> None:
    """docs/policies.md quotes each example policy in full; the quotes must not drift."""
    import re

    doc = (EXAMPLES.parents[1] / "docs" / "policies.md").read_text()
    quoted = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    for name in ("childrens-tutoring.yaml", "adult-creative-writing.yaml", "customer-support.yaml"):
        assert (EXAMPLES / name).read_text() in quoted, f"docs/policies.md is stale for {name}"
