"""Application factory. `create_app()` builds everything from the settings; the lifespan owns what runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import (
    auth,
    billing,
    companies,
    connection,
    deliveries,
    docs,
    health,
    openapi_components,
    sync,
    webhooks,
)
from app.api.problems import install_connectwise_handlers, install_problem_handlers
from app.clock import Clock
from app.connectwise.sandbox.app import Sandbox, SandboxTransport
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.context import AppContext
from app.logging import configure_logging
from app.middleware import RejectNulMiddleware, RequestContextMiddleware
from app.settings import Settings, get_settings

API_TITLE = "cw-billing-sync"
API_VERSION = "0.1.0"


def create_app(
    settings: Settings | None = None, *, engine: AsyncEngine | None = None, sandbox: Sandbox | None = None
) -> FastAPI:
    """`sandbox`: the fake ConnectWise to answer at the in-process site (tests and benchmarks bring their own; with
    `CW_SANDBOX` one reading the service's clock is made here). Start-up is the only place that knows it is fake:
    the rest of the service sees a CW site whose transport is mounted on the CW HTTP client."""
    settings = settings or get_settings()
    configure_logging(json=settings.log_as_json(), level=settings.log_level)
    clock = Clock.for_settings(settings.pin_now)
    if sandbox is None and settings.cw_sandbox:
        sandbox = Sandbox(now=clock.now)
    mounts = {IN_PROCESS_SITE: SandboxTransport(sandbox)} if sandbox is not None else {}
    ctx = AppContext.build(settings, engine=engine, clock=clock, cw_mounts=mounts)
    owns_engine = engine is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker_task = None
        worker = None
        if settings.run_worker:
            # SQLite: this is the single worker. PostgreSQL: one of many (each claims with SKIP LOCKED).
            from app.sync.worker import Worker

            worker = Worker(ctx, full_reconcile_every=timedelta(hours=settings.full_reconcile_hours))
            ctx.intake.on_stored = worker.wake  # a stored delivery is applied at once, not at the next poll
            app.state.worker = worker
            worker_task = asyncio.create_task(worker.run_forever(), name="sync-worker")
        try:
            yield
        finally:
            try:
                if worker is not None and worker_task is not None:
                    worker.stop()
                    with contextlib.suppress(Exception):
                        await worker_task
            finally:
                await ctx.aclose()
                if owns_engine:
                    await ctx.engine.dispose()

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        summary="Keeps ConnectWise Manage agreement additions in step with vendor-portal license counts.",
        description=docs.INTRODUCTION,
        docs_url=None,  # served by app/api/docs.py, without a CDN
        redoc_url=None,
        lifespan=lifespan,
        telemetry=None if settings.otel_enabled else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    app.state.sandbox = sandbox  # for tests, benchmarks and the demo; the service never reads it
    app.state.worker = None
    docs.install_docs(app)
    install_problem_handlers(app)
    install_connectwise_handlers(app)
    app.add_middleware(webhooks.WebhookFastPath, api=app)
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=ctx.metrics)  # outermost: it sees every answer
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(webhooks.router)
    app.include_router(connection.router)
    app.include_router(billing.router)
    app.include_router(companies.router)
    app.include_router(sync.router)
    app.include_router(deliveries.router)
    openapi_components.install(app)
    return app
