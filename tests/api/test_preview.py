"""The preview shows what will happen, changes nothing, and agrees with the real change to the cent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from app.context import AppContext
from app.db.models import LicenseChange
from tests.api.setup_helpers import configured_tenant, mapped_company
from tests.conftest import TenantFactory
from tests.sync.helpers import by_role, money, worker
from tests.webhook_helpers import deliver, license_event


async def test_preview_then_the_real_change_agree_to_the_cent(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await mapped_company(client, tenant, headers, licenses=None)
    now = datetime.now(UTC)
    effective = now.replace(hour=0, minute=0, second=0, microsecond=0)
    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        license_event("c-42", 1, sequence=1, effective_at=(effective - timedelta(days=400)).isoformat()),
    )
    sync = worker(ctx, now=now)
    await sync.drain()
    writes_before = ctx.sandbox.store.writes if ctx.sandbox else 0

    preview = await client.post(
        "/api/v1/companies/c-42/license-changes/preview",
        headers=headers,
        json={"license_count": 9, "effective_at": effective.isoformat()},
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["base_before"]["quantity"], body["base_after"]["quantity"]) == (1, 9)
    assert body["message"].startswith("Licenses 1 → 9 will be applied to agreement 'Managed Services'")
    assert body["proration_before"] is None
    line = body["proration_after"]
    period_days, remaining = (
        body["period"]["days"],
        (datetime.fromisoformat(body["period"]["end"]).date() - effective.date()).days + 1,
    )
    assert f"+8 licenses × $3.00 × {remaining}/{period_days} days" in line["description"]
    # Nothing changed: no ledger row, no CW write.
    async with ctx.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(LicenseChange)) == 1
    assert ctx.sandbox is not None
    assert ctx.sandbox.store.writes == writes_before

    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        license_event("c-42", 9, sequence=2, previous=1, effective_at=effective.isoformat()),
    )
    await sync.drain()
    (proration,) = by_role(ctx.sandbox, 1)["proration"]
    assert money(proration["unitPrice"]) == money(line["amount"])
    assert proration["effectiveDate"].startswith(line["effective_date"])
    assert by_role(ctx.sandbox, 1)["base"][0]["quantity"] == 9


async def test_charges_of_a_period(client: httpx.AsyncClient, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await mapped_company(client, tenant, headers, licenses=None)
    for seq, (count, when) in enumerate(
        [(1, "2026-10-20T10:00:00Z"), (9, "2026-11-16T14:03:00Z"), (5, "2026-11-21T09:00:00Z")], start=1
    ):
        await deliver(
            client,
            tenant.tenant_id,
            tenant.webhook_secret,
            license_event("c-42", count, sequence=seq, effective_at=when),
        )
    charges = (
        await client.get("/api/v1/companies/c-42/charges", params={"period": "2026-11-18"}, headers=headers)
    ).json()
    assert charges["period"] == {"start": "2026-11-01", "end": "2026-11-30", "days": 30}
    assert charges["billed_quantity"] == 1
    assert [e["license_count"] for e in charges["entries"]] == [9, 5]
    # 8 seats for 5 days (16–20) + 4 seats for 10 days (21–30) = 80 seat-days × 3.00 / 30 = 8.00
    assert (charges["seat_days"], charges["amount"]) == (80, "8.00")
    assert charges["description"].endswith("= $8.00")
    october = (
        await client.get("/api/v1/companies/c-42/charges", params={"period": "2026-10-31"}, headers=headers)
    ).json()
    assert october["period"]["start"] == "2026-10-01"
    bad = await client.get("/api/v1/companies/c-42/charges", params={"period": "not-a-date"}, headers=headers)
    assert bad.status_code == 422


async def test_preview_of_an_unmapped_company_says_so(client: httpx.AsyncClient, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-9", 3))
    response = await client.post(
        "/api/v1/companies/c-9/license-changes/preview", headers=headers, json={"license_count": 5}
    )
    assert response.status_code == 409
    assert "not mapped" in response.json()["detail"]


async def test_sync_api_review_mode_approve_and_reconciliation(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await client.patch("/api/v1/billing/settings", json={"sync_mode": "review"}, headers=headers)
    await mapped_company(client, tenant, headers, licenses=4)
    sync = worker(ctx, now=datetime(2026, 11, 25, 12, tzinfo=UTC))
    await sync.drain()
    assert ctx.sandbox is not None
    assert ctx.sandbox.store.additions_of(1) == []
    status = (await client.get("/api/v1/companies/c-42/sync", headers=headers)).json()
    assert status["status"] == "awaiting_approval"
    assert status["pending_change_set"]["operations"][0]["kind"] == "create"
    recon = (await client.get("/api/v1/reconciliation", headers=headers)).json()["items"]
    assert recon[0]["in_step"] is False
    assert any("waiting for approval" in p for p in recon[0]["problems"])
    approved = await client.post("/api/v1/reconciliation/approve", json={}, headers=headers)
    assert approved.json() == {"approved": ["c-42"]}
    await sync.drain()
    assert [a["quantity"] for a in by_role(ctx.sandbox, 1)["base"]] == [4]
    recon = (await client.get("/api/v1/reconciliation", headers=headers)).json()["items"]
    assert recon[0]["in_step"] is True, recon
    assert (recon[0]["portal_count"], recon[0]["cw_quantity"]) == (4, "4")
    nothing = await client.post("/api/v1/companies/c-42/sync", json={"approve": True}, headers=headers)
    assert nothing.status_code == 409
    audit = (await client.get("/api/v1/audit-events", params={"object_id": "c-42"}, headers=headers)).json()
    assert {"change_set.approved", "cw.addition.created"} <= {e["action"] for e in audit["items"]}
