"""Input checks that run beside the model call (:class:`~persona_mw.types.PendingCheck`): the
engine settles them before any of the reply is released, and cancels what a call leaves
behind. One place, so no host can release a reply a late verdict would have replaced."""

from __future__ import annotations

from ..types import CallContext

__all__ = ["UnsettledChecks", "cancel_checks", "settle_checks"]


class UnsettledChecks(RuntimeError):
    """A host fed the engine a reply while input checks were still running: a bug in the host
    (it must ``await enforcer.settle()`` first), never a user's or deployer's error."""


async def settle_checks(ctx: CallContext) -> None:
    """Await every pending check of the call in turn (they already run concurrently, so the
    wait is the slowest one's), applying each verdict to ``ctx``. A check that raises (a bug:
    detector failures are verdicts) cancels the rest and propagates. Checks still waiting for
    the request to go out (``ctx.request_sent``, a client that never said) start now."""
    if ctx.request_sent is not None:
        ctx.request_sent.set()
    try:
        while ctx.pending:
            check = ctx.pending[0]
            await check.settle(ctx)
            ctx.pending.remove(check)
    except BaseException:
        cancel_checks(ctx)
        raise


def cancel_checks(ctx: CallContext) -> None:
    """Stop the checks still running: the call ended (or was answered) without needing them."""
    for check in ctx.pending:
        check.cancel()
    ctx.pending.clear()
