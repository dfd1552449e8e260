"""The sync status tells the truth in one vocabulary (`/companies/{id}/sync`, `/companies`, `/reconciliation`): a
company that is not billing says why and what to do, and `POST …/sync` on one a reconcile cannot help (never mapped,
billing off for the tenant) is refused with 409 and the same status."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from app.context import AppContext
from app.sync.worker import Worker
from tests.api.setup_helpers import configured_tenant, synced_company
from tests.conftest import TenantFactory
from tests.webhook_helpers import deliver


@pytest.fixture(autouse=True)
def tenth_of_november(ctx: AppContext) -> None:
    ctx.clock.freeze(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))


async def _seen_everywhere(client: httpx.AsyncClient, headers: dict[str, str], company_id: str) -> set[str]:
    """The company's status as each view reports it."""
    sync = (await client.get(f"/api/v1/companies/{company_id}/sync", headers=headers)).json()
    company = (await client.get(f"/api/v1/companies/{company_id}", headers=headers)).json()
    recon = (await client.get("/api/v1/reconciliation", headers=headers)).json()
    rows = [r for r in recon["items"] if r["company_id"] == company_id]
    return {sync["status"], company["sync"]["status"], *(r["status"] for r in rows)}


async def test_an_unmapped_company_says_so_and_a_sync_is_refused_with_the_same_word(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-7", "name": "Fabrikam"}},
    )
    await Worker(ctx, full_reconcile_every=None).drain()
    status = (await client.get("/api/v1/companies/c-7/sync", headers=headers)).json()
    assert status["status"] == "not_mapped"
    assert "PUT /api/v1/companies/c-7/mapping" in status["action"]
    refused = await client.post("/api/v1/companies/c-7/sync", headers=headers, json={})
    assert refused.status_code == 409
    assert refused.json()["code"] == "not_mapped"
    assert "mapping" in refused.json()["detail"]


async def test_billing_off_for_the_company_or_the_tenant_is_never_called_in_sync(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    _, headers = await synced_company(client, make_tenant, ctx, licenses=3)
    assert await _seen_everywhere(client, headers, "c-42") == {"in_sync"}

    off = await client.patch("/api/v1/companies/c-42/billing", json={"enabled": False}, headers=headers)
    assert off.status_code == 200
    await Worker(ctx, full_reconcile_every=None).drain()  # the next period's line is ended; nothing new is billed
    assert await _seen_everywhere(client, headers, "c-42") == {"billing_disabled"}
    sync = (await client.get("/api/v1/companies/c-42/sync", headers=headers)).json()
    assert '"enabled": true' in sync["action"]
    ended = await client.post("/api/v1/companies/c-42/sync", headers=headers, json={})
    assert ended.status_code == 202  # a reconcile still ends what billing would carry on
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _seen_everywhere(client, headers, "c-42") == {"billing_disabled"}

    await client.patch("/api/v1/companies/c-42/billing", json={"enabled": True}, headers=headers)
    await client.patch("/api/v1/billing/settings", json={"enabled": False}, headers=headers)
    assert await _seen_everywhere(client, headers, "c-42") == {"billing_off_for_tenant"}
    sync = (await client.get("/api/v1/companies/c-42/sync", headers=headers)).json()
    assert "PATCH /api/v1/billing/settings" in sync["action"]
    refused = await client.post("/api/v1/companies/c-42/sync", headers=headers, json={})
    assert (refused.status_code, refused.json()["code"]) == (409, "billing_off_for_tenant")

    await client.patch("/api/v1/billing/settings", json={"enabled": True}, headers=headers)
    assert await _seen_everywhere(client, headers, "c-42") == {"pending"}  # turning it on queued a reconcile
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _seen_everywhere(client, headers, "c-42") == {"in_sync"}
    again = await client.post("/api/v1/companies/c-42/sync", headers=headers, json={})
    assert again.status_code == 202
    assert again.json()["status"] == "pending"


async def test_a_dismissed_change_set_and_a_deleted_company_say_what_they_are(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant, headers = await synced_company(client, make_tenant, ctx, licenses=3)
    await client.patch("/api/v1/billing/settings", json={"sync_mode": "review"}, headers=headers)
    await client.delete("/api/v1/companies/c-42/mapping", headers=headers)
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _seen_everywhere(client, headers, "c-42") == {"awaiting_approval"}
    await client.post("/api/v1/companies/c-42/sync", json={"dismiss": True}, headers=headers)
    # Not "not_mapped": the line that should have ended is still in CW, and a re-sync brings the change set back.
    assert await _seen_everywhere(client, headers, "c-42") == {"dismissed"}
    again = await client.post("/api/v1/companies/c-42/sync", json={}, headers=headers)
    assert again.status_code == 202
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _seen_everywhere(client, headers, "c-42") == {"awaiting_approval"}
    await client.post("/api/v1/companies/c-42/sync", json={"approve": True}, headers=headers)
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _seen_everywhere(client, headers, "c-42") == {"not_mapped"}

    await deliver(
        client, tenant.tenant_id, tenant.webhook_secret, {"type": "company.deleted", "data": {"company_id": "c-42"}}
    )
    await Worker(ctx, full_reconcile_every=None).drain()
    status = (await client.get("/api/v1/companies/c-42/sync", headers=headers)).json()
    assert status["status"] == "deleted"
    assert "company.upserted" in status["action"]
