"""Driving the setup story through the API, for tests that need a configured tenant."""

from __future__ import annotations

from typing import Any

import httpx

from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.context import AppContext
from app.services.tenants import NewTenant
from app.sync.worker import Worker
from tests.conftest import TenantFactory, bearer
from tests.webhook_helpers import apply_deliveries, deliver

CONNECTION = {
    "site_url": IN_PROCESS_SITE,
    "company_id": "sandbox",
    "public_key": "sandbox-public",
    "private_key": "sandbox-private",
    "client_id": "5b3e6a52-3f5e-4e8b-9d7a-1c0f7e2a9b11",
}


async def connect(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.put("/api/v1/connectwise/connection", json=CONNECTION, headers=headers)
    assert response.status_code == 200, response.text


async def configured_tenant(
    client: httpx.AsyncClient, tenant: NewTenant, *, price: str = "3.00", cost: str = "1.00"
) -> dict[str, str]:
    """Connected, billing on, product mapped (the seeded VEND-EDR item) with default price and cost."""
    headers = await bearer(client, tenant)
    await connect(client, headers)
    assert (await client.patch("/api/v1/billing/settings", json={"enabled": True}, headers=headers)).status_code == 200
    items = (await client.get("/api/v1/connectwise/catalog", params={"search": "VEND-EDR"}, headers=headers)).json()
    mapped = await client.put(
        "/api/v1/billing/product",
        headers=headers,
        json={"cw_catalog_item_id": items[0]["id"], "unit_price": price, "unit_cost": cost},
    )
    assert mapped.status_code == 200, mapped.text
    return headers


async def mapped_company(
    client: httpx.AsyncClient,
    tenant: NewTenant,
    headers: dict[str, str],
    *,
    company_id: str = "c-42",
    name: str = "Contoso",
    cw_identifier: str = "CONTOSO",
    licenses: int | None = 1,
    ctx: AppContext | None = None,
) -> dict[str, Any]:
    """A portal company (by webhook), mapped to its CW company's first agreement, billing enabled. `ctx`: apply the
    deliveries through it (for a server in another process, whose worker does not run)."""
    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": company_id, "name": name, "identifier": cw_identifier}},
    )
    if licenses is not None:
        await deliver(
            client,
            tenant.tenant_id,
            tenant.webhook_secret,
            {
                "type": "license.count_changed",
                "data": {
                    "company_id": company_id,
                    "license_count": licenses,
                    "sequence": 1,
                    "effective_at": "2026-10-01T12:00:00Z",
                },
            },
        )
    if ctx is not None:
        await apply_deliveries(ctx)
    cw_company = (
        await client.get("/api/v1/connectwise/companies", params={"search": cw_identifier}, headers=headers)
    ).json()[0]
    agreement = (
        await client.get(f"/api/v1/connectwise/companies/{cw_company['id']}/agreements", headers=headers)
    ).json()[0]
    mapping = await client.put(
        f"/api/v1/companies/{company_id}/mapping",
        headers=headers,
        json={"cw_company_id": cw_company["id"], "cw_agreement_id": agreement["id"]},
    )
    assert mapping.status_code == 200, mapping.text
    enabled = await client.patch(f"/api/v1/companies/{company_id}/billing", json={"enabled": True}, headers=headers)
    assert enabled.status_code == 200, enabled.text
    body: dict[str, Any] = enabled.json()
    return body


async def synced_company(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext, *, licenses: int = 1
) -> tuple[NewTenant, dict[str, str]]:
    """Tenant "Acme" set up, company c-42 mapped with billing on and `licenses` since 1 October, reconciled (the
    worker has drained). Returns the tenant and its API headers."""
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await mapped_company(client, tenant, headers, licenses=licenses)
    await Worker(ctx, full_reconcile_every=None).drain()
    return tenant, headers
