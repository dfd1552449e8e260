"""Two workers on PostgreSQL, each with its own engine (as two processes would be): every job once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select, update

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.db.base import utcnow
from app.db.models import SyncState, Tenant
from app.settings import Settings
from app.sync.worker import Worker
from tests.sync.bulk import fleet


async def test_two_workers_handle_each_of_500_jobs_exactly_once(
    sandbox: Sandbox, ctx: AppContext, settings: Settings
) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("concurrent workers are a PostgreSQL feature; SQLite runs one in-process worker")
    group = await fleet(ctx, sandbox, companies=500)
    async with ctx.sessionmaker() as s, s.begin():
        # The tenant's master switch off: each job is claimed, reconciled (as paused) and finished without CW calls.
        await s.execute(update(Tenant).where(Tenant.id == group.tenant_id).values(billing_enabled=False))
        await s.execute(update(SyncState).values(due_at=utcnow(), generation=1, reason="manual"))
    contexts = [AppContext.build(settings), AppContext.build(settings)]
    workers = [
        Worker(c, worker_id=f"w{i}", batch_size=7, concurrency=4, full_reconcile_every=None)
        for i, c in enumerate(contexts)
    ]
    try:
        await asyncio.gather(*(w.drain() for w in workers))
    finally:
        for c in contexts:
            await c.aclose()
            await c.engine.dispose()
    handled = Counter(claim.company_id for w in workers for claim in w.handled)
    assert len(handled) == 500
    assert max(handled.values()) == 1
    assert all(w.handled for w in workers)  # both really worked
    async with ctx.sessionmaker() as s:
        assert list(await s.scalars(select(SyncState).where(SyncState.due_at.is_not(None)))) == []
