"""Routes for admin keys only: ``GET /v1/admin/dashboard``, the deployment dashboard.

The page is the one ``persona-mw report --aggregate --html FILE`` writes
(:mod:`persona_mw.signals.dashboard`), from the middleware's own usage and counter stores, so the
server and the CLI show the same figures. It carries counts only and loads nothing from anywhere
(its Content-Security-Policy says so to the browser too).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from persona_mw import Middleware
from persona_mw.signals.dashboard import CONTENT_SECURITY_POLICY, dashboard_html, load_dashboard
from persona_mw.signals.stage import DependenceStage

from ..deps import ERRORS, State, Who, allow
from ..errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["admin"])


@router.get(
    "/v1/admin/dashboard",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}, **ERRORS},
)
async def dashboard(who: Who, state: State) -> HTMLResponse:
    """The deployment dashboard (one self-contained HTML page): active users, messages,
    minutes, session lengths, signal levels and ladder actions per day, crisis referrals
    and disclosures per month and law, bound decisions per rule. Admin keys only."""
    allow(who, "read_dashboard")
    stage = _dependence_stage(state.mw)
    report = await load_dashboard(
        stage.usage_store,  # type: ignore[arg-type]
        stage.state_store,
        now=datetime.now(UTC),
        config=stage.config,
    )
    return HTMLResponse(
        dashboard_html(report),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",
        },
    )


def _dependence_stage(mw: Middleware) -> DependenceStage:
    for stage in mw.input_stages:
        if isinstance(stage, DependenceStage) and hasattr(stage.usage_store, "users"):
            return stage
    raise ApiError(
        404,
        "this server records no usage signals (its middleware has no dependence stage with a "
        "usage store), so there is no dashboard; serve a config built by build_middleware",
        code="not_found",
    )
