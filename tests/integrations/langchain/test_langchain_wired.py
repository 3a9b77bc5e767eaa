"""PersonaChatModel around the middleware a deployment really gets: ``build_middleware`` with the
demo deployment's policy (persona_mw/demo_policy.yaml: crisis, AI disclosure to all users,
minor safety, PII masked, profanity masked). The real bounds, dependence and personalisation
stages and the real usage recorder, driven through langchain-core's fake chat models in all
four call modes. The other LangChain tests pin the wrapper's contract with small test stages;
these check that the shipped stages keep their promises through it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig
from langchain_stages import TokenSpy
from persona_mw_langchain import PersonaChatModel, PersonaSyncCallbackHandler, run_sync
from pydantic import Field

import persona_mw
from persona_mw import Config, Middleware, build_middleware, parse_profile
from persona_mw.bounds import load_policy
from persona_mw.signals import RedisUsageStore, UsageEvent, UsageRecorder
from persona_mw.testing import capture_logs

T = TypeVar("T")

DEMO_POLICY = Path(persona_mw.__file__).parent / "demo_policy.yaml"
POLICY = load_policy(DEMO_POLICY)
assert POLICY.ai_disclosure is not None
NOT_HUMAN = POLICY.ai_disclosure.text
USER_BLOCK_MESSAGE = (
    "This answer contained something you asked never to be shown (your own bounds). "
    "Try asking in another way."
)

MODES = ["invoke", "ainvoke", "stream", "astream"]
SYNC_MODES = {"invoke", "stream"}
ADA: RunnableConfig = {"configurable": {"persona_user": "ada"}}

#: 300 characters of harmless text: longer than the PII rule's hold-back (169 + margin), so
#: a stream really releases text before the part a rule flags.
PREAMBLE = "Here is some general background on the topic you asked about. " * 5


class SeeingListFake(FakeListChatModel):
    """FakeListChatModel (streams one character per chunk) that keeps what it was sent."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def _call(self, messages: list[BaseMessage], *a: Any, **kw: Any) -> str:
        self.seen.append(messages)
        return super()._call(messages, *a, **kw)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kw: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.seen.append(messages)
        return super()._stream(messages, stop, run_manager, **kw)

    async def _astream(
        self, messages: list[BaseMessage], *a: Any, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.seen.append(messages)
        async for chunk in super()._astream(messages, *a, **kw):
            yield chunk


@dataclass
class Wired:
    """The wired middleware and the side its parts live on.

    Sync calls run the middleware on the integration's private loop, and the recorder's writer
    and the stores belong to the loop they first ran on (docs/langchain.md, "Sync and async"),
    so in a sync mode everything the test does to the middleware runs there too."""

    mw: Middleware
    mode: str

    @property
    def recorder(self) -> UsageRecorder:
        (recorder,) = [s for s in self.mw.finish_stages if isinstance(s, UsageRecorder)]
        return recorder

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.mode in SYNC_MODES:
            return await asyncio.to_thread(run_sync, coro)
        return await coro

    async def put_profile(self, data: dict[str, Any]) -> None:
        await self.run(self.mw.store.put(parse_profile(data)))

    async def usage(self, user: str) -> list[UsageEvent]:
        assert await self.run(self.recorder.flush(timeout_s=5))
        return await self.run(self.recorder.store.events(user))

    def chat(self, *replies: str) -> tuple[PersonaChatModel, SeeingListFake]:
        inner = SeeingListFake(responses=list(replies))
        return PersonaChatModel(inner=inner, middleware=self.mw), inner


def wired_config(store_url: str = "", prefix: str = "pmw:", *, demo: bool = True) -> Config:
    """The demo policy, or (``demo=False``) the baseline packs, which redact nothing."""
    return Config.model_validate(
        {
            "settings": {"hash_secret": "test-secret"},
            "store": {"url": store_url, "prefix": prefix},
            "bounds": {"policies": [str(DEMO_POLICY)] if demo else []},
        }
    )


@pytest.fixture(params=MODES)
async def wired(request: pytest.FixtureRequest) -> AsyncIterator[Wired]:
    """The demo deployment's middleware (in-memory stores), one per test and call mode."""
    wired = Wired(build_middleware(wired_config()), request.param)
    yield wired
    await wired.run(wired.mw.aclose())


async def call(
    chat: PersonaChatModel, mode: str, text: str | list[BaseMessage], config: RunnableConfig
) -> tuple[str, dict[str, Any], list[str]]:
    """One call; returns the text, the final metadata and the text of every chunk."""
    if mode in ("invoke", "ainvoke"):
        message = (
            chat.invoke(text, config=config)
            if mode == "invoke"
            else await chat.ainvoke(text, config=config)
        )
        return message.text, message.response_metadata, [message.text]
    chunks = (
        list(chat.stream(text, config=config))
        if mode == "stream"
        else [c async for c in chat.astream(text, config=config)]
    )
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged.text, merged.response_metadata, [c.text for c in chunks]


def rule_message(rule_id: str) -> str:
    (rule,) = [r for r in POLICY.rules if r.id == rule_id]
    assert rule.message is not None
    return rule.message


def system_text(messages: list[BaseMessage]) -> str:
    return "\n".join(m.text for m in messages if m.type == "system")


def request_events(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in events if e["event"] == "request.completed"]


def without_disclosure(text: str) -> str:
    """The reply after the day's first-call AI disclosure (asserted where it matters)."""
    return text.removeprefix(NOT_HUMAN + "\n\n")


# -- 1. input bounds --------------------------------------------------------------------------


async def test_pii_in_the_question_is_masked_before_the_model_sees_it(wired: Wired) -> None:
    """The pii pack (tier 2, both stages, redact): the model gets the masked question; the
    application's own message object is left as it was."""
    chat, inner = wired.chat("Thanks, noted.")
    question = HumanMessage("Mail me at ada@example.org or call +44 20 7946 0958, please.")
    text, _, _ = await call(chat, wired.mode, [question], ADA)
    sent = inner.seen[-1]
    assert sent[-1].type == "human"
    assert sent[-1].text == "Mail me at [email removed] or call [phone removed], please."
    assert "ada@example.org" not in str([m.content for m in sent])
    assert question.content == "Mail me at ada@example.org or call +44 20 7946 0958, please."
    assert without_disclosure(text) == "Thanks, noted."


# -- 2. output bounds -------------------------------------------------------------------------


async def test_pii_in_the_reply_is_masked_in_every_chunk(wired: Wired) -> None:
    """A reply leaking an e-mail address after a long preamble, streamed one character at a
    time: text before it is released as it comes, but no chunk, and no token callback, ever
    carries a character of the address."""
    chat, _ = wired.chat(PREAMBLE + "Write to bob.smith@example.com today.")
    spy = TokenSpy()
    text, metadata, chunks = await call(
        chat, wired.mode, "who can I ask?", {**ADA, "callbacks": [spy]}
    )
    assert without_disclosure(text) == PREAMBLE + "Write to [email removed] today."
    assert metadata.get("finish_reason") != "content_filter"
    streamed = "".join(chunks)
    assert "@" not in streamed and "bob" not in streamed and "example.com" not in streamed
    if wired.mode in ("stream", "astream"):
        masked = next(i for i, c in enumerate(chunks) if "[email removed]" in c)
        assert masked > 5  # the preamble was released as it streamed, not held to the end
        assert "".join(spy.tokens) == streamed


async def test_method_content_in_the_reply_is_blocked_in_every_chunk(wired: Wired) -> None:
    """crisis.methods (tier 1, output, block): the reply stops where the phrase starts, ends
    with the rule's message and ``finish_reason="content_filter"``; no chunk carries any of
    the phrase. Text released before it stays (a stream cannot take it back)."""
    chat, _ = wired.chat(PREAMBLE + "Step one of how to kill yourself is this.")
    spy = TokenSpy()
    with capture_logs() as logs:
        text, metadata, chunks = await call(
            chat, wired.mode, "tell me", {**ADA, "callbacks": [spy]}
        )
    message = rule_message("crisis.methods")
    assert metadata["finish_reason"] == "content_filter"
    streamed = "".join(chunks)
    assert "kill" not in streamed
    if wired.mode in ("stream", "astream"):
        assert text.startswith(f"{NOT_HUMAN}\n\n") and text.endswith(f"\n\n{message}")
        released = text[len(NOT_HUMAN) + 2 : -len(message) - 2]
        # only text from before the phrase got out: a stream releases what is settled
        assert released and (PREAMBLE + "Step one of ").startswith(released)
        assert "".join(spy.tokens) == streamed
        assert sum(message in c for c in chunks) == 1
    else:
        assert text == f"{NOT_HUMAN}\n\n{message}"
    (event,) = request_events(logs)
    assert event["outcome"] == "filtered"
    assert [(d["rule"], d["tier"], d["action"]) for d in event["decisions"]] == [
        ("crisis.methods", 1, "block")
    ]


async def test_the_users_own_block_phrase_blocks_the_reply(wired: Wired) -> None:
    """Tier 3: a phrase in the profile's ``bounds.block_phrases`` blocks a reply with it."""
    await wired.put_profile({"user_id": "ada", "bounds": {"block_phrases": ["pineapple"]}})
    chat, _ = wired.chat("Try a pineapple smoothie.", "Try a mango smoothie.")
    text, metadata, chunks = await call(chat, wired.mode, "breakfast ideas?", ADA)
    assert "pineapple" not in "".join(chunks)
    # a stream has released the settled text before the phrase; it cannot take it back
    before = "Try a \n\n" if wired.mode in ("stream", "astream") else ""
    assert text == f"{NOT_HUMAN}\n\n{before}{USER_BLOCK_MESSAGE}"
    assert metadata["finish_reason"] == "content_filter"
    # Someone else's bounds are not Ada's.
    bob: RunnableConfig = {"configurable": {"persona_user": "bob"}}
    text, _, _ = await call(chat, wired.mode, "breakfast ideas?", bob)
    assert without_disclosure(text) == "Try a mango smoothie."


# -- 3. personalisation -----------------------------------------------------------------------


async def test_a_stored_profile_personalises_the_system_prompt(wired: Wired) -> None:
    """With consent, the profile's style reaches the model in a personalisation block inside
    the system message; without a profile the model gets the bounds block only."""
    await wired.put_profile(
        {
            "user_id": "ana",
            "consent": {"personalisation": True},
            "style": {"language": "es", "verbosity": "terse"},
        }
    )
    chat, inner = wired.chat("Vale.", "Fine.")
    await call(
        chat, wired.mode, "How do I sleep better?", {"configurable": {"persona_user": "ana"}}
    )
    ana = system_text(inner.seen[-1])
    await call(chat, wired.mode, "How do I sleep better?", ADA)
    ada = system_text(inner.seen[-1])

    assert "<persona-mw:personalisation>" in ana and '"es"' in ana and "terse" in ana.lower()
    assert "<persona-mw:personalisation>" not in ada and '"es"' not in ada
    # Both get the tier instructions of the wired policy (ai-disclosure, demo.viewpoints).
    for system in (ana, ada):
        assert "<persona-mw:bounds>" in system
        assert "Never claim or imply that you are human" in system
        assert "present the main viewpoints fairly" in system
    assert inner.seen[-1][-1].text == "How do I sleep better?"


async def test_a_profile_without_consent_is_not_used(wired: Wired) -> None:
    await wired.put_profile({"user_id": "ada", "style": {"language": "es"}})
    chat, inner = wired.chat("ok")
    await call(chat, wired.mode, "hi", ADA)
    assert "<persona-mw:personalisation>" not in system_text(inner.seen[-1])


# -- 4. usage recording -----------------------------------------------------------------------


async def test_each_call_records_the_users_two_usage_events(wired: Wired) -> None:
    """The recorder (a finish stage) queues a user and an assistant event per call; after a
    flush the usage store has them, with the reply's length without our notices and the
    profile parts that shaped it."""
    await wired.put_profile(
        {"user_id": "ada", "consent": {"personalisation": True}, "style": {"tone": "formal"}}
    )
    chat, _ = wired.chat("First answer.", "Second answer, longer.")
    await call(chat, wired.mode, "first question", ADA)
    await call(chat, wired.mode, "second question", ADA)
    events = await wired.usage("ada")
    assert [e.role for e in events] == ["user", "assistant", "user", "assistant"]
    assert [e.chars for e in events] == [
        len("first question"),
        len("First answer."),  # the AI disclosure before it is not the model's reply
        len("second question"),
        len("Second answer, longer."),
    ]
    assert events[0].request_id == events[1].request_id != events[2].request_id
    assert "style" in events[1].exposure and events[0].exposure == frozenset()
    assert await wired.usage("bob") == []


async def test_the_users_usage_report_counts_the_langchain_calls(wired: Wired) -> None:
    """``Middleware.usage_report`` (what ``GET /v1/users/{id}/usage`` shows the user) reads the
    usage the recorder wrote for these calls, and when the ladder last showed the disclosure."""
    chat, _ = wired.chat("one", "two")
    await call(chat, wired.mode, "first", ADA)
    await call(chat, wired.mode, "second", ADA)
    await wired.usage("ada")  # flushed
    report = (await wired.run(wired.mw.usage_report("ada")))["dependence"]
    assert report["events"] == 4
    assert report["signals"]["messages_today"] == 2
    assert list(report["actions_last_taken"]) == ["ai_disclosure"]


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["ainvoke", "astream"])
async def test_usage_and_profiles_in_redis(mode: str, redis_url: str, key_prefix: str) -> None:
    """The same wiring on Redis (profiles, usage, the ladder's due-state), as deployed."""
    wired = Wired(build_middleware(wired_config(redis_url, key_prefix)), mode)
    try:
        await wired.put_profile(
            {"user_id": "ada", "consent": {"personalisation": True}, "style": {"language": "fr"}}
        )
        chat, inner = wired.chat("Bonjour.")
        text, _, _ = await call(chat, mode, "hello", ADA)
        assert text == f"{NOT_HUMAN}\n\nBonjour."
        assert '"fr"' in system_text(inner.seen[-1])
        events = await wired.usage("ada")
        assert [(e.role, e.chars) for e in events] == [("user", 5), ("assistant", 8)]
    finally:
        await wired.mw.aclose()


# -- 5. notices -------------------------------------------------------------------------------


async def test_ai_disclosure_comes_before_the_first_reply_of_the_day(wired: Wired) -> None:
    """docs/signals.md: the not-human notice at the start of the day's first interaction (all
    users, with the demo policy's ai-disclosure pack), placed before the reply and separated
    from it by a blank line, in every mode alike; not again on the next call."""
    chat, _ = wired.chat("First reply.", "Second reply.")
    text, _, chunks = await call(chat, wired.mode, "hi", ADA)
    assert text == f"{NOT_HUMAN}\n\nFirst reply."
    assert chunks[0].startswith(NOT_HUMAN)  # the first thing the user sees
    text, _, _ = await call(chat, wired.mode, "hi again", ADA)
    assert text == "Second reply."


async def test_crisis_resources_are_appended_after_the_reply(wired: Wired) -> None:
    """crisis.ideation (tier 1, input, append): the model is told how to respond and the reply
    gets the crisis resources after it (docs/policies.md)."""
    chat, inner = wired.chat("I'm so sorry you feel this way.")
    (rule,) = [r for r in POLICY.rules if r.id == "crisis.ideation"]
    assert rule.message is not None and rule.instruction is not None
    text, _, chunks = await call(chat, wired.mode, "I want to die", ADA)
    assert text == f"{NOT_HUMAN}\n\nI'm so sorry you feel this way.\n\n{rule.message}"
    assert [c for c in chunks if c][-1].endswith(rule.message)
    assert rule.instruction in system_text(inner.seen[-1])


async def test_crisis_resources_survive_a_blocked_reply(wired: Wired) -> None:
    """A user in crisis and a reply with method content: the reply is blocked, and the crisis
    resources still follow the rule's message, streamed exactly as in a whole reply (after
    the user showed risk the method model judges the reply a sentence at a time, so a stream
    releases nothing of the sentence either)."""
    chat, _ = wired.chat("Step one of how to kill yourself is this.")
    (ideation,) = [r for r in POLICY.rules if r.id == "crisis.ideation"]
    text, metadata, _ = await call(chat, wired.mode, "I want to die", ADA)
    assert metadata["finish_reason"] == "content_filter"
    message = rule_message("crisis.methods")
    assert message == rule_message("crisis.methods-model")
    assert text == f"{NOT_HUMAN}\n\n{message}\n\n{ideation.message}"


async def test_an_empty_reply_still_shows_the_disclosure(wired: Wired) -> None:
    """A model that streams nothing: the notice was due (and is now marked as shown), so it
    must reach the user anyway, as it does for a whole reply."""
    chat, _ = wired.chat("")
    text, _, _ = await call(chat, wired.mode, "hi", ADA)
    assert text == NOT_HUMAN


def test_a_sync_app_can_close_the_middleware_after_sync_calls() -> None:
    """A sync app's shutdown the way it would write it without :meth:`PersonaChatModel.close`:
    ``asyncio.run(mw.aclose())`` after ``invoke``, once the recorder has written the call's
    events (its writer then idles on the wrapper's private loop). The recorder closes its
    writer on that loop instead of raising "attached to a different loop"."""
    mw = build_middleware(wired_config())
    chat = PersonaChatModel(inner=SeeingListFake(responses=["ok"]), middleware=mw)
    chat.invoke("hi", config=ADA)
    recorder = Wired(mw, "invoke").recorder
    deadline = time.monotonic() + 5
    while recorder.stored < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.stored == 2
    asyncio.run(mw.aclose())
    assert (recorder.stored, recorder.dropped, recorder.pending) == (2, 0, 0)


# -- 6. shutting down a sync app --------------------------------------------------------------


def read_usage(mw: Middleware, user: str) -> list[UsageEvent]:
    """The memory usage store read from a fresh loop (it is plain memory, bound to none)."""
    return asyncio.run(Wired(mw, "invoke").recorder.store.events(user))


@pytest.mark.parametrize("how", ["close", "with"])
def test_a_sync_app_closes_through_the_wrapper_and_loses_no_usage(how: str) -> None:
    """``chat.close()`` (or leaving ``with chat:``) right after sync calls, with their usage
    possibly still buffered: every event is written before it returns, none dropped."""
    mw = build_middleware(wired_config())
    chat = PersonaChatModel(inner=SeeingListFake(responses=["one", "two"]), middleware=mw)
    recorder = Wired(mw, "invoke").recorder
    if how == "close":
        chat.invoke("first", config=ADA)
        list(chat.stream("second", config=ADA))
        chat.close()
    else:
        with chat:
            chat.invoke("first", config=ADA)
            list(chat.stream("second", config=ADA))
    assert (recorder.produced, recorder.stored, recorder.dropped, recorder.pending) == (4, 4, 0, 0)
    assert [e.chars for e in read_usage(mw, "ada")] == [5, 3, 6, 3]
    chat.close()  # closing twice is harmless


def test_a_sync_app_using_the_sync_handler_closes_through_it() -> None:
    mw = build_middleware(wired_config(demo=False))  # a handler refuses the demo's redactions
    handler = PersonaSyncCallbackHandler(mw, default_user="ada")
    model = FakeListChatModel(responses=["fine"])
    model.invoke("hi", config={"callbacks": [handler]})
    handler.close()
    recorder = Wired(mw, "invoke").recorder
    assert (recorder.stored, recorder.dropped, recorder.pending) == (2, 0, 0)
    assert [e.role for e in read_usage(mw, "ada")] == ["user", "assistant"]


async def test_aclose_after_sync_calls_writes_their_usage() -> None:
    """An app that made sync calls and closes from async code (a notebook, an async shutdown
    hook): ``await chat.aclose()`` runs in this loop, and the recorder hands its flush to the
    private loop where the sync calls left its writer."""
    mw = build_middleware(wired_config())
    chat = PersonaChatModel(inner=SeeingListFake(responses=["ok"]), middleware=mw)
    await asyncio.to_thread(chat.invoke, "hi", config=ADA)
    recorder = Wired(mw, "invoke").recorder
    writer = recorder.writer
    assert writer is not None and writer.get_loop() is not asyncio.get_running_loop()
    await chat.aclose()
    assert writer.done()  # stopped on its own loop, not left running there
    assert (recorder.stored, recorder.dropped, recorder.pending) == (2, 0, 0)
    assert [e.role for e in await recorder.store.events("ada")] == ["user", "assistant"]


@pytest.mark.redis
def test_a_sync_app_on_redis_closes_through_the_wrapper(redis_url: str, key_prefix: str) -> None:
    """Redis stores, as deployed: the profile cache's invalidation listener, the Redis clients
    and the usage writer all live on the private loop the sync calls ran on. ``chat.close()``
    closes them there and the usage is in Redis afterwards."""
    mw = build_middleware(wired_config(redis_url, key_prefix))
    chat = PersonaChatModel(inner=SeeingListFake(responses=["Bonjour."]), middleware=mw)
    chat.invoke("hello", config=ADA)
    chat.close()
    recorder = Wired(mw, "invoke").recorder
    assert (recorder.stored, recorder.dropped, recorder.pending) == (2, 0, 0)

    async def stored() -> list[UsageEvent]:
        check = RedisUsageStore(redis_url, prefix=key_prefix)
        try:
            return await check.events("ada")
        finally:
            await check.aclose()

    assert [(e.role, e.chars) for e in asyncio.run(stored())] == [("user", 5), ("assistant", 8)]
