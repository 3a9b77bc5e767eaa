"""A whole (not streamed) reply is checked in one pass (``ChecksWholeText``), not fed through
the stream's hold-back: its verdict must be the one the same text gets when streamed in any
chunks — the same released text and decisions, or a block by the same rule."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from persona_mw import Profile
from persona_mw.bounds import StreamFilter
from persona_mw.enforce import FilterChain, Piece, ReplyEnforcer
from persona_mw.types import CallContext, ChecksWholeText
from tests.bounds.test_stream import FRAGMENTS, HOLD_BACK, SCANNER, chunkings


def _ctx() -> CallContext:
    messages = [{"role": "user", "content": "hi"}]
    return CallContext(
        request_id="r",
        user_id="u",
        user_hash="h",
        model="m",
        messages=messages,
        prompt_messages=list(messages),
        stream=False,
        llm_kwargs={},
        profile=Profile(user_id="u"),
        profile_source="store",
        started_at=datetime.now(UTC),
    )


def _enforcer(ctx: CallContext, *, filters: int) -> ReplyEnforcer:
    """The engine over ``filters`` stream filters in a row (two: a second stage checks what the
    first released)."""
    return ReplyEnforcer(
        ctx,
        lambda: FilterChain(
            [StreamFilter(SCANNER, ctx, hold_back=HOLD_BACK) for _ in range(filters)]
        ),
    )


def _outcome(ctx: CallContext) -> list[tuple[str, str, tuple[tuple[int, int, str], ...]]]:
    return [
        (d.rule_id, d.action, tuple((s.start, s.end, s.label) for s in d.spans))
        for d in ctx.decisions
    ]


def test_the_stream_filter_checks_whole_texts() -> None:
    assert isinstance(StreamFilter(SCANNER, None, hold_back=HOLD_BACK), ChecksWholeText)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=30),
    cuts=chunkings,
    filters=st.integers(1, 2),
)
def test_a_whole_reply_gets_the_streamed_verdict(
    parts: list[str], cuts: list[int], filters: int
) -> None:
    text = "".join(parts)
    whole_ctx, stream_ctx = _ctx(), _ctx()
    whole = _enforcer(whole_ctx, filters=filters).whole(0, Piece(text))
    streamed = _enforcer(stream_ctx, filters=filters)
    bounds = sorted({c for c in cuts if 0 < c < len(text)})
    released = ""
    for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True):
        out = streamed.feed(0, Piece(text[a:b]))
        released += out.content
        if out.finish_reason:
            break
    else:
        ends = streamed.end("stop")
        released += "".join(r.content for r in ends)
    assert whole.finish_reason == ("content_filter" if streamed.stopped(0) else "stop"), (
        "block or not"
    )
    assert whole_ctx.outcome == stream_ctx.outcome
    if streamed.stopped(0):
        # a block: the same rule stops both (the stream finds no hit beyond the block)
        blocking = {d.rule_id for d in stream_ctx.decisions if d.action == "block"}
        assert blocking <= {d.rule_id for d in whole_ctx.decisions if d.action == "block"}
    else:
        assert whole.content == released
        assert sorted(_outcome(whole_ctx)) == sorted(_outcome(stream_ctx))
