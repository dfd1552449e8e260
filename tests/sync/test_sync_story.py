"""The sync engine end to end against the sandbox: what lands in CW for the seed's story."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from app.context import AppContext
from app.db.models import SyncState
from tests.api.setup_helpers import configured_tenant, mapped_company
from tests.conftest import TenantFactory
from tests.sync.helpers import by_role, money, worker
from tests.webhook_helpers import deliver, license_event


async def test_one_to_nine_on_day_16_lands_as_base_9_and_a_12_00_proration_line(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await mapped_company(client, tenant, headers)
    sync = worker(ctx)
    await sync.drain()
    async with ctx.sessionmaker() as s:
        first = (await s.scalars(select(SyncState))).one()
    assert (first.status, first.last_error) == ("in_sync", None)
    assert ctx.sandbox is not None
    lines = by_role(ctx.sandbox, 1)
    assert [a["quantity"] for a in lines["base"]] == [1]
    assert lines["proration"] == []

    change = await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        license_event("c-42", 9, sequence=2, previous=1, effective_at="2026-11-16T14:03:00Z"),
    )
    assert change.json()["outcome"] == "applied"
    await sync.drain()
    lines = by_role(ctx.sandbox, 1)
    (base,) = lines["base"]
    assert (base["quantity"], money(base["unitPrice"]), money(base["unitCost"]), base["lessIncluded"]) == (
        9,
        money(3),
        money(1),
        0,
    )
    (proration,) = lines["proration"]
    assert (proration["quantity"], money(proration["unitPrice"])) == (1, money("12.00"))
    assert proration["effectiveDate"].startswith("2026-12-01")
    assert proration["cancelledDate"].startswith("2026-12-31")
    assert "+8 licenses × $3.00 × 15/30 days (16–30 Nov 2026)" in proration["invoiceDescription"]
    async with ctx.sessionmaker() as s:
        state = (await s.scalars(select(SyncState))).one()
    assert (state.status, state.due_at, state.last_error) == ("in_sync", None, None)

    # Re-running changes nothing: the planner finds CW already right.
    writes = ctx.sandbox.store.writes
    from app.services.sync_schedule import schedule_sync

    async with ctx.sessionmaker() as s, s.begin():
        await schedule_sync(s, tenant_id=tenant.tenant_id, company_id=state.company_id, reason="manual")
    await sync.drain()
    assert ctx.sandbox.store.writes == writes
