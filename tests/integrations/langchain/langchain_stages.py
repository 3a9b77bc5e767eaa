"""Small real stages for the LangChain tests: the integration's contract, not a mock of ours.

- :class:`BlockWord`: an input stage that refuses input containing a word (a tier-2 rule);
- :class:`StyleHint`: an input stage that personalises: adds a system message from the profile;
- :class:`StopWord`: an output stage whose filter stops at a word, holding back enough text
  that no prefix of the word is released before the verdict;
- :class:`Recorder`: a finish stage that keeps what a usage recorder would see;
- :class:`TokenSpy`: a callback handler that keeps every streamed token callbacks are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from persona_mw import CallContext, Decision, Middleware, Notice, Settings

__all__ = [
    "BlockWord",
    "Record",
    "Recorder",
    "StopWord",
    "StyleHint",
    "TokenSpy",
    "make_middleware",
]


@dataclass(frozen=True)
class BlockWord:
    word: str = "forbidden"
    message: str = "I can't help with that."
    name: str = "block-word"

    async def __call__(self, ctx: CallContext) -> None:
        if self.word in ctx.user_text().lower():
            ctx.decisions.append(
                Decision(
                    rule_id=f"no-{self.word}",
                    tier=2,
                    stage="input",
                    detector="keyword",
                    action="block",
                    message=self.message,
                )
            )
            ctx.reply = self.message
            ctx.reply_finish_reason = "content_filter"


@dataclass(frozen=True)
class StyleHint:
    """Personalises: a system message naming the user, the profile part counted as exposure."""

    notice: str | None = None
    name: str = "style-hint"

    async def __call__(self, ctx: CallContext) -> None:
        hint = {"role": "system", "content": f"Answer tersely for {ctx.user_id}."}
        ctx.prompt_messages = [hint, *ctx.prompt_messages]
        ctx.exposure.parts.add("style")
        if self.notice:
            ctx.notices.append(Notice(text=self.notice, source="test-notice"))


class _StopFilter:
    def __init__(self, ctx: CallContext, word: str, message: str) -> None:
        self.ctx, self.word, self.message = ctx, word, message
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        self.buffer += text
        at = self.buffer.lower().find(self.word)
        if at >= 0:
            self.stopped = True
            self.ctx.decisions.append(
                Decision(
                    rule_id=f"no-{self.word}-out",
                    tier=1,
                    stage="output",
                    detector="keyword",
                    action="block",
                    message=self.message,
                )
            )
            released, self.buffer = self.buffer[:at], ""
            return released
        cut = max(0, len(self.buffer) - (len(self.word) - 1))
        released, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return released

    def finish(self) -> str:
        released, self.buffer = self.buffer, ""
        return released


@dataclass(frozen=True)
class StopWord:
    word: str = "secret"
    message: str = "[withheld: policy]"
    name: str = "stop-word"

    def open(self, ctx: CallContext) -> _StopFilter:
        return _StopFilter(ctx, self.word, self.message)


@dataclass
class Record:
    user: str
    surface: str
    stream: bool
    outcome: str
    finish_reason: str | None
    output: str
    prompt: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    exposure: set[str]
    rules: list[str]


@dataclass
class Recorder:
    """A usage sink: it keeps records, like the real recorder's queue (not per-call state)."""

    records: list[Record] = field(default_factory=list)
    name: str = "recorder"

    async def __call__(self, ctx: CallContext) -> None:
        self.records.append(
            Record(
                user=ctx.user_id,
                surface=ctx.surface,
                stream=ctx.stream,
                outcome=ctx.outcome,
                finish_reason=ctx.finish_reason,
                output=ctx.output_text,
                prompt=ctx.prompt_messages,
                prompt_tokens=ctx.prompt_tokens,
                completion_tokens=ctx.completion_tokens,
                exposure=set(ctx.exposure.parts),
                rules=[d.rule_id for d in ctx.decisions],
            )
        )


def make_middleware(recorder: Recorder, *, notice: str | None = None) -> Middleware:
    return Middleware(
        input_stages=[BlockWord(), StyleHint(notice=notice)],
        output_stages=[StopWord()],
        finish_stages=[recorder],
        settings=Settings(hash_secret="test-secret"),
    )


class TokenSpy(BaseCallbackHandler):
    """Every token LangChain's callbacks are given: what LangGraph's ``stream_mode="messages"``
    and any streaming UI would show the user."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)
