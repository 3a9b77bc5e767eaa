"""EU AI Act Art. 50(2): every reply carries a machine-readable marker outside its text."""

from __future__ import annotations

from persona_mw import Middleware
from persona_mw.bounds import BoundsInputStage, BoundsOutputStage, policy_from_dict
from persona_mw.compliance import PROVENANCE_FIELD
from persona_mw.profile import Profile
from persona_mw.stores.memory import MemoryProfileStore

MODEL = "openai/fake"
POLICY = policy_from_dict({"version": "mark-7", "packs": ["crisis", "minor-safety"]})


async def _mw() -> Middleware:
    store = MemoryProfileStore()
    await store.put(Profile(user_id="kid", age_band="13_15", jurisdictions=["eu-ai-act-art50"]))
    return Middleware(
        store=store,
        input_stages=[BoundsInputStage(policy=POLICY)],
        output_stages=[BoundsOutputStage(policy=POLICY)],
    )


async def test_a_whole_reply_is_marked() -> None:
    mw = await _mw()
    response = await mw.acompletion(
        user="kid", model=MODEL, messages=[{"role": "user", "content": "hi"}], mock_response="Hey"
    )
    assert response.choices[0].message.content == "Hey"  # the text is untouched
    marker = getattr(response, PROVENANCE_FIELD)
    assert marker["ai_generated"] is True
    assert marker["generator"].startswith("persona_mw")
    assert marker["model"] == MODEL
    assert marker["policy_version"] == "mark-7"
    assert marker["jurisdictions"] == ["eu-ai-act-art50"]


async def test_a_stream_is_marked_on_its_first_chunk() -> None:
    mw = await _mw()
    chunks = [
        chunk
        async for chunk in mw.astream(
            user="ada",
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            mock_response="Hello there",
        )
    ]
    marker = getattr(chunks[0], PROVENANCE_FIELD)
    assert marker["model"] == MODEL and marker["ai_generated"] is True
    assert marker["jurisdictions"] == []


async def test_an_answer_without_the_model_says_no_model_ran() -> None:
    mw = await _mw()
    response = await mw.acompletion(
        user="kid", model=MODEL, messages=[{"role": "user", "content": "send nudes"}]
    )
    assert response.choices[0].finish_reason == "content_filter"
    assert getattr(response, PROVENANCE_FIELD)["model"] is None
    chunks = [
        c
        async for c in mw.astream(
            user="kid", model=MODEL, messages=[{"role": "user", "content": "send nudes"}]
        )
    ]
    assert getattr(chunks[0], PROVENANCE_FIELD)["model"] is None
