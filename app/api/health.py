"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app.api.deps import ContextDep
from app.db.health import database_health

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessCheck(BaseModel):
    name: str
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: list[ReadinessCheck]


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """Liveness: the process answers. No authentication."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database reachable, migrations at head, the in-process worker running",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def readyz(ctx: ContextDep, request: Request, response: Response) -> Readiness:
    """Readiness: the database answers, its schema is at the code's migration head, and the in-process worker (when it
    runs) is working. 503 with the failing check otherwise."""
    checks: list[ReadinessCheck] = []
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        checks.append(
            ReadinessCheck(
                name="worker",
                ok=worker.running and worker.healthy,
                detail=(
                    "not running"
                    if not worker.running
                    else "running"
                    if worker.healthy
                    else f"failing, retrying: {worker.last_error}"
                ),
            )
        )
    database = await database_health(ctx.engine)
    if database.error is not None:
        checks.append(ReadinessCheck(name="database", ok=False, detail=database.error))
    else:
        checks.append(ReadinessCheck(name="database", ok=True, detail="reachable"))
        checks.append(
            ReadinessCheck(
                name="migrations",
                ok=database.at_head,
                detail="at head"
                if database.at_head
                else f"database at {database.current or 'nothing'}, code expects {database.head}",
            )
        )
    ready = all(c.ok for c in checks)
    if not ready:
        response.status_code = 503
    return Readiness(ready=ready, checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus metrics: requests, webhooks by outcome, intake batches, sync jobs, CW calls, the queue depth,
    companies with drift, worker health. No authentication; expose it to your scraper only."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
