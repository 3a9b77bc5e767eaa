"""The operations routes: liveness, readiness (the profile store answers) and Prometheus
metrics summed over every worker."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from persona_mw.metrics import render_metrics

from ..deps import State

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down"}})
async def readyz(state: State) -> Response:
    """Ready for traffic: the profile store answers (when it is Redis)."""
    answers = await state.mw.store.ping()
    if answers is False:
        return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ready", "store": "embedded" if answers is None else "ok"})


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus metrics, summed over every worker (no user ids in any label)."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
