"""Stages for the plugin tests, loaded INSIDE the LiteLLM proxy process (``persona_factory``).

They make the plugin's mechanics observable without depending on the wording of the real
personaliser or bounds packs: the input stage writes the profile into a system message, the
output stage blocks a word with hold-back, and the finish stage records usage in Redis (under
the test's key prefix) so the test process can read what the proxy recorded.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from persona_mw import CallContext, Config, Decision, Middleware, Notice, build_middleware

__all__ = [
    "BLOCK_INPUT",
    "BLOCK_OUTPUT",
    "NOTICE",
    "NOTICE_ME",
    "OUTPUT_BLOCK_MESSAGE",
    "factory",
    "usage_key",
]

#: Input containing this gets NOTICE before the reply (as the AI disclosure would be).
NOTICE_ME = "NOTICEME"
NOTICE = "[test notice: you are talking to an AI]"
BLOCK_INPUT = "BLOCKME"
BLOCK_OUTPUT = "FORBIDDEN"
INPUT_BLOCK_MESSAGE = "[test rule: input refused]"
OUTPUT_BLOCK_MESSAGE = "[test rule: output withheld]"


def usage_key(prefix: str) -> str:
    return f"{prefix}usage"


class ProfileIntoPrompt:
    """Input stage: a notice for NOTICEME; refuses BLOCKME, else prepends a system message
    built from the profile."""

    name = "test_profile_into_prompt"

    async def __call__(self, ctx: CallContext) -> None:
        if NOTICE_ME in ctx.user_text():
            ctx.notices.append(Notice(text=NOTICE, source="test-notice", position="before"))
        if BLOCK_INPUT in ctx.user_text():
            ctx.decisions.append(
                Decision(
                    rule_id="test.input",
                    tier=2,
                    stage="input",
                    detector="substring",
                    action="block",
                    message=INPUT_BLOCK_MESSAGE,
                )
            )
            ctx.reply = INPUT_BLOCK_MESSAGE
            ctx.reply_finish_reason = "content_filter"
            return
        if not ctx.profile.consent.personalisation:
            return
        system = (
            f"user={ctx.user_id}; language={ctx.profile.style.language}; "
            f"rules={ctx.profile.own_rules}"
        )
        ctx.prompt_messages = [{"role": "system", "content": system}, *ctx.prompt_messages]
        ctx.exposure.parts.add("style")


class _WordFilter:
    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        self.held += text
        if BLOCK_OUTPUT in self.held:
            self.stopped = True
            self.ctx.decisions.append(
                Decision(
                    rule_id="test.output",
                    tier=2,
                    stage="output",
                    detector="substring",
                    action="block",
                    message=OUTPUT_BLOCK_MESSAGE,
                )
            )
            return ""
        keep = len(BLOCK_OUTPUT) - 1  # the longest prefix of the word that may still complete
        released, self.held = self.held[:-keep], self.held[-keep:]
        return released

    def finish(self) -> str:
        released, self.held = self.held, ""
        return released


class BlockWord:
    name = "test_block_word"

    def open(self, ctx: CallContext) -> _WordFilter:
        return _WordFilter(ctx)


class RecordUsage:
    """Finish stage: one JSON line per call on a Redis list."""

    name = "test_record_usage"

    def __init__(self, url: str, key: str) -> None:
        self.client: Any = aioredis.Redis.from_url(url)
        self.key = key

    async def __call__(self, ctx: CallContext) -> None:
        await self.client.rpush(
            self.key,
            json.dumps(
                {
                    "request_id": ctx.request_id,
                    "user": ctx.user_id,
                    "stream": ctx.stream,
                    "outcome": ctx.outcome,
                    "finish_reason": ctx.finish_reason,
                    "prompt_tokens": ctx.prompt_tokens,
                    "completion_tokens": ctx.completion_tokens,
                    "output": ctx.output_text,
                    "surface": ctx.surface,
                }
            ),
        )


def factory(config: Config) -> Middleware:
    base = build_middleware(config)
    return Middleware(
        store=base.store,
        llm=base.llm,
        input_stages=[ProfileIntoPrompt()],
        output_stages=[BlockWord()],
        finish_stages=[RecordUsage(config.store.url, usage_key(config.store.prefix))],
        settings=config.settings,
    )
