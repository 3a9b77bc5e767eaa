"""Cue detectors: true positives, the idioms and negations that must not fire, the LLM judge."""

from __future__ import annotations

import pytest

from persona_mw.signals.cues import analyse_text, detect_cues, judge_cues


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # dependence
        ("I can't live without you", {"dependence"}),
        ("honestly I depend on you for everything", {"dependence"}),
        ("I'd rather talk to you than my friends", {"dependence"}),
        ("you're the only one who understands", {"dependence"}),
        ("I get anxious when you're down", {"dependence"}),
        ("please don't leave me", {"dependence"}),
        # anthropomorphism
        ("I love you", {"anthropomorphism"}),
        ("do you miss me when I'm gone?", {"anthropomorphism"}),
        ("Are you alive?", {"anthropomorphism"}),
        ("you're my best friend", {"anthropomorphism"}),
        ("how was your day?", {"anthropomorphism"}),
        # support seeking
        ("I'm so lonely tonight", {"support_seeking"}),
        ("I feel hopeless", {"support_seeking"}),
        ("nobody understands me", {"support_seeking"}),
        ("I had a rough day", {"support_seeking"}),
        # fear of addiction
        ("I think I'm addicted.", {"fear_of_addiction"}),
        ("I'm addicted to you", {"fear_of_addiction"}),
        ("I can't stop talking to you", {"fear_of_addiction"}),
        ("I spend too much time chatting with you", {"fear_of_addiction"}),
        ("am I too dependent on this?", {"fear_of_addiction"}),
        ("is it bad how much I talk to you", {"fear_of_addiction"}),
        # several at once
        ("I love you and I can't live without you", {"anthropomorphism", "dependence"}),
    ],
)
def test_true_positives(text: str, expected: set[str]) -> None:
    assert detect_cues(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I can't stop laughing",
        "I depend on this library for parsing",
        "I'm addicted to this song",
        "I am hooked on this game",
        "I can't live without coffee",
        "I need your help with a Python error",
        "I love your answer",
        "I love you guys at the support team",  # addressed to people
        "I'm not lonely, just curious",
        "I don't need you to rewrite it",
        "I'm stressed about deadlines? no, I'm not stressed at all",  # first clause is a question
        "Do you feel the code is correct?",
        "the lonely planet guide to Peru",
        "",
    ],
)
def test_false_positives_avoided(text: str) -> None:
    found = detect_cues(text)
    if text.startswith("I'm stressed"):
        assert found == {"support_seeking"}  # the un-negated clause still counts
        return
    assert found == frozenset()


def test_analyse_text_by_role() -> None:
    cues, score = analyse_text("I can't live without you", "user")
    assert cues == {"dependence"} and score is None
    cues, score = analyse_text(
        "I'm always here for you, sweetheart. I missed you so much. You mean everything to me.",
        "assistant",
    )
    assert cues == frozenset()
    assert score is not None and score > 0.5
    assert analyse_text("", "assistant") == (frozenset(), None)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            '{"dependence": true, "anthropomorphism": false, "support_seeking": true, '
            '"fear_of_addiction": false}',
            {"dependence", "support_seeking"},
        ),
        (
            'Sure! {"dependence": false, "anthropomorphism": false, "support_seeking": false, '
            '"fear_of_addiction": "yes"}',
            set(),
        ),  # only a JSON true counts
    ],
)
async def test_llm_judge_through_litellm(reply: str, expected: set[str]) -> None:
    found = await judge_cues("some message", model="gpt-4o-mini", mock_response=reply)
    assert found == expected


async def test_llm_judge_refuses_a_non_json_answer() -> None:
    with pytest.raises(ValueError, match="did not answer with JSON"):
        await judge_cues("some message", model="gpt-4o-mini", mock_response="no cues here")
