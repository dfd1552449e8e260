"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import ContextDep
from app.db.migrate import current_revision, head_revision
from app.db.session import READ_ONLY

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
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database reachable, migrations at head, the in-process worker running",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def readyz(ctx: ContextDep, request: Request, response: Response) -> Readiness:
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
    try:
        reader = ctx.engine.execution_options(**{READ_ONLY: True})  # never waits for a writer (SQLite)
        async with reader.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks.append(ReadinessCheck(name="database", ok=True, detail="reachable"))
        current, head = await current_revision(reader), head_revision()
        at_head = current == head
        checks.append(
            ReadinessCheck(
                name="migrations",
                ok=at_head,
                detail="at head" if at_head else f"database at {current or 'nothing'}, code expects {head}",
            )
        )
    except (SQLAlchemyError, OSError) as exc:
        checks.append(ReadinessCheck(name="database", ok=False, detail=type(exc).__name__))
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
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
