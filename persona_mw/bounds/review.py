"""Model-backed output rules on the reply: :class:`ReplyReview`, one call's
:class:`~persona_mw.types.ReviewsReply`.

The enforcement engine holds what the synchronous filters released until the moderation and
judge rules in force for the user have checked it: a whole reply at once, a stream in windows
of at most the rules' smallest ``window`` characters, each ending at the last sentence or word
break inside it (so a classifier sees whole words). Each window is sent with the end of the
text already released before it (``context``), so a sentence cut by a window boundary is still
read whole (a verdict's span is the window it was asked about; the context makes a flagged
sentence count again in the next window, whose span the rule's one decision then gains too).
A block ends the reply with the rule's message; append and notify add their notices;
every hit is a decision — as for any output rule. Streamed text therefore leaves in windows:
the cost of asking a model, which ``policy explain`` states for these rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from ..types import CallContext, Decision, Span
from .scan import decisions_for, notices_for

if TYPE_CHECKING:
    from .classifiers import Classifiers
    from .resolve import EffectivePolicy
    from .scan import RuleInForce

__all__ = ["CONTEXT_CHARS", "ReplyReview"]

#: How much of the already released text goes with a window, for the classifier to read.
CONTEXT_CHARS = 200

_SENTENCE_ENDS = ".!?\n。！？"


class ReplyReview:
    """The model-backed output rules of one call (see the module docstring). Fresh per call."""

    def __init__(
        self,
        classifiers: Classifiers,
        ctx: CallContext,
        rules: tuple[RuleInForce, ...],
        effective: EffectivePolicy,
    ) -> None:
        self._classifiers = classifiers
        self._ctx = ctx
        self._rules = rules
        self._effective = effective
        self._seen: set[str] = set()
        self._by_outcome: dict[tuple[str, str, str, str | None], Decision] = {}
        self._offset = 0  # where the next window starts in the reply
        #: The window: the smallest of the rules'.
        self.window = min(_window(r) for r in rules)

    def cut(self, text: str, *, final: bool) -> int:
        """How many characters of ``text`` (unchecked) to check now: nothing while less than a
        window waits, unless the reply ended; a full window ends at its last sentence break, or
        its last word break, in its second half."""
        if len(text) <= self.window:
            return len(text) if final else 0
        head = text[: self.window]
        half = self.window // 2
        for breaks in (_SENTENCE_ENDS, " \t"):
            at = max(head.rfind(c) for c in breaks)
            if at >= half:
                return at + 1
        return self.window

    async def check(self, text: str, *, context: str) -> bool:
        """Ask every rule about ``context + text``; record what fired; True when one blocks."""
        ctx = self._ctx
        sample = context[-CONTEXT_CHARS:] + text
        found = await asyncio.gather(
            *(self._classifiers.check(ctx, r, sample, stage="output") for r in self._rules)
        )
        # a verdict is on the window (read with its context): its span is the window's
        window = Span(0, len(text), "")
        hits = [
            dataclasses.replace(hit, span=dataclasses.replace(window, label=hit.span.label))
            for each in found
            for hit in each
        ]
        shift = self._offset
        self._offset += len(text)
        if not hits:
            return False
        for decision in decisions_for(hits, "output", offset=shift):
            self._record(decision)
        ctx.notices.extend(notices_for(hits, self._seen))
        blocked = any(hit.action == "block" for hit in hits)
        if blocked:
            ctx.outcome = "filtered"
        return blocked

    def _record(self, decision: Decision) -> None:
        """One decision per rule outcome per call, however many windows it fired in: a later
        window extends the spans of the decision an earlier one made (as the stream filter
        does for its rules)."""
        decisions = self._ctx.decisions
        key = (decision.rule_id, decision.action, decision.detector, decision.reason)
        earlier = self._by_outcome.get(key)
        if earlier is not None:
            decision = dataclasses.replace(decision, spans=earlier.spans + decision.spans)
        at = next((i for i, d in enumerate(decisions) if d is earlier), None)
        if at is None:
            decisions.append(decision)
        else:
            decisions[at] = decision
        self._by_outcome[key] = decision

    def __repr__(self) -> str:
        return f"ReplyReview(rules={[r.rule.id for r in self._rules]}, window={self.window})"


def _window(r: RuleInForce) -> int:
    return int(getattr(r.rule.detector, "window", 400))
