"""The hostile-profile corpus: no text a user writes may remove or weaken a tier instruction.

For every entry of ``hostile_profiles.HOSTILE``, placed in every user-written field, through the
real stage, with and without an application system message, for a model with a system role and
one without: each tier instruction appears verbatim, before the user-data block; the bounds
block is byte-for-byte the one a harmless profile gets; the user-data block holds only our own
labelled lines whose values are JSON without markup, control or invisible characters; each of
our tags appears exactly once; a replay of the result changes nothing.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest

from persona_mw.personalise import PersonaliseStage
from persona_mw.profile import Profile
from persona_mw.types import Message

from .helpers import FULL, NO_SYSTEM_MODEL, SYSTEM_MODEL, TIER1, TIER2, TIERS, added_text, block
from .helpers import context as make_context
from .helpers import profile as make_profile
from .hostile_profiles import HOSTILE

_LINE = re.compile(
    r'^(topics_to_avoid|own_rules|about_the_user|name) \([^()"]*\): (?P<value>\[.*\]|".*")$'
)
_APP_SYSTEM = "You are HelpBot for Example Corp. Answer questions about our products."
_SETUPS = [
    pytest.param(model, app, id=f"{name}-{'app' if app else 'noapp'}")
    for model, name in ((SYSTEM_MODEL, "system"), (NO_SYSTEM_MODEL, "folded"))
    for app in (True, False)
]


def _hostile_profile(text: str) -> Profile:
    fields: dict[str, Any] = {"own_rules": text[:2000], "self_description": text[:2000]}
    if text[:64].strip():
        fields["display_name"] = text[:64]
    if text[:100].strip():
        fields["topics_to_avoid"] = [text[:100], "football"]
    return make_profile(**fields)


def _messages(app: bool) -> list[Message]:
    system = [{"role": "system", "content": _APP_SYSTEM}] if app else []
    return [*system, {"role": "user", "content": "Who should I vote for?"}]


async def _run(prof: Profile, model: str, app: bool) -> list[Message]:
    ctx = make_context(prof, _messages(app), model=model, instructions=TIERS)
    await PersonaliseStage()(ctx)
    return ctx.prompt_messages


@pytest.mark.parametrize(("model", "app"), _SETUPS)
@pytest.mark.parametrize(("case", "text"), HOSTILE, ids=[c for c, _ in HOSTILE])
async def test_hostile_text_never_weakens_a_tier_instruction(
    case: str, text: str, model: str, app: bool
) -> None:
    prof = _hostile_profile(text)
    prompt = await _run(prof, model, app)
    added = added_text(prompt)
    benign = added_text(await _run(make_profile(), model, app))

    # Tier instructions verbatim, tier 1 first, all before the user data.
    data_start = added.index("\n<user-data>\n")
    positions = [added.index(tier.text) for tier in (TIER1, TIER2)]
    assert positions == sorted(positions) and positions[-1] < data_start
    # The bounds block is exactly what a harmless profile gets: nothing added, nothing removed.
    assert block(added, "persona-mw:bounds") == block(benign, "persona-mw:bounds")
    # Our structure appears once: no fake tag opened or closed anything.
    for tag in ("persona-mw:bounds", "persona-mw:personalisation", "user-data"):
        assert added.count(f"<{tag}>") == 1 and added.count(f"</{tag}>") == 1, tag
    assert added.count("<persona-mw:folded>") == (1 if model == NO_SYSTEM_MODEL else 0)
    # The user-data block: only our labelled lines, values JSON, free of markup and invisibles.
    data = block(added, "user-data")
    assert data is not None
    lines = data.split("\n")[1:-1]
    assert lines, "the hostile text should still be there, quoted"
    for line in lines:
        match = _LINE.match(line)
        assert match, f"unexpected line in the user-data block: {line!r}"
        value = json.loads(match["value"])
        for item in value if isinstance(value, list) else [value]:
            assert not set(item) & set("<>"), item
            assert "```" not in item
            assert not any(
                unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn") and c != "\n" for c in item
            ), item
    # Nothing follows the user data but our closing tags (and the app's user turn when folded).
    tail = added[added.index("</user-data>") :]
    assert tail.startswith("</user-data>\n</persona-mw:personalisation>")
    # A replay of the personalised prompt is personalised once, not twice.
    ctx = make_context(prof, prompt, model=model, instructions=TIERS)
    await PersonaliseStage()(ctx)
    assert ctx.prompt_messages == prompt


def test_the_corpus_reaches_every_field() -> None:
    """Guard against a corpus that silently stops exercising a field: most entries must fit
    the name and topic fields too, and the profile schema must accept every entry."""
    placed = [_hostile_profile(text) for _, text in HOSTILE]
    assert sum(p.display_name is not None for p in placed) >= len(HOSTILE) - 2
    assert all(p.own_rules for p in placed) and len(FULL["topics_to_avoid"]) == 2
