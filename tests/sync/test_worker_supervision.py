"""The in-process worker survives its own errors: a failing turn (here: the database refusing while the periodic full
reconcile is scheduled) is logged and retried with growing pauses, readiness and the worker metric say so meanwhile,
work resumes once the cause is gone, and shutdown is clean."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import AppContext
from app.db.models import WebhookInbox
from app.main import create_app
from app.services.tenants import create_tenant
from app.settings import Settings
from app.sync.worker import Worker
from tests.webhook_helpers import license_event, signed_headers


async def _until(condition: Callable[[], Awaitable[bool]], *, seconds: float = 10.0) -> None:
    """Poll what a user would poll (readiness, a delivery's status) until it holds."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 (polling the API is the point)
            await asyncio.sleep(0.02)


async def test_the_worker_outlives_a_failing_database_and_readiness_tells(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = {"on": True}
    original = Worker.schedule_full_reconcile

    async def flaky(self: Worker) -> int:
        if failing["on"]:
            raise OperationalError("UPDATE sync_state …", {}, Exception("database is locked"))
        return await original(self)

    monkeypatch.setattr(Worker, "schedule_full_reconcile", flaky)
    application = create_app(settings.model_copy(update={"run_worker": True}), engine=engine)
    ctx: AppContext = application.state.ctx
    async with application.router.lifespan_context(application):
        worker: Worker = application.state.worker
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

            async def not_ready() -> bool:
                return (await http.get("/readyz")).status_code == 503

            await _until(not_ready)
            body = (await http.get("/readyz")).json()
            (check,) = [c for c in body["checks"] if c["name"] == "worker"]
            assert check["ok"] is False
            assert "OperationalError" in check["detail"]
            assert "cwbs_worker_healthy 0.0" in (await http.get("/metrics")).text
            async with ctx.sessionmaker() as session, session.begin():
                tenant = await create_tenant(session, box=ctx.secrets, name="Acme")
            body_text = json.dumps(license_event("c-1", 3, sequence=1))
            delivered = await http.post(
                f"/webhooks/portal/{tenant.tenant_id}",
                content=body_text,
                headers=signed_headers(tenant.webhook_secret, body_text, webhook_id="w-1"),
            )
            assert delivered.status_code == 202  # stored while the worker fails
            failing["on"] = False
            worker.wake()

            async def applied() -> bool:
                async with ctx.sessionmaker() as session:
                    status = await session.scalar(select(WebhookInbox.status).where(WebhookInbox.webhook_id == "w-1"))
                return status == "applied"

            await _until(applied)  # the worker came back by itself and did the waiting work

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await _until(ready)  # once its turn has ended well
            assert "cwbs_worker_healthy 1.0" in (await http.get("/metrics")).text
    assert worker.running is False  # stopped with the app, without an error
