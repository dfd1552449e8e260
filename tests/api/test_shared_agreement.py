"""Two portal companies on one CW agreement: refused with 409 naming the other company unless it is meant; when it
is, each company's lines carry its name and each keeps to its own lines."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.sync.worker import Worker
from tests.api.setup_helpers import configured_tenant, mapped_company
from tests.conftest import TenantFactory
from tests.webhook_helpers import deliver, license_event


@pytest.fixture(autouse=True)
def tenth_of_november(ctx: AppContext) -> None:
    ctx.clock.freeze(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))


async def test_a_second_company_on_an_agreement_needs_share_agreement_and_then_its_lines_name_it(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext, sandbox: Sandbox
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    first = await mapped_company(client, tenant, headers, company_id="c-1", name="Contoso East", licenses=3)
    agreement = first["mapping"]["cw_agreement_id"]
    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-2", "name": "Contoso West"}},
    )
    await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-2", 2, sequence=1))
    await Worker(ctx, full_reconcile_every=None).drain()
    body = {"cw_company_id": first["mapping"]["cw_company_id"], "cw_agreement_id": agreement}

    refused = await client.put("/api/v1/companies/c-2/mapping", json=body, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["code"] == "agreement_shared"
    assert refused.json()["companies"] == ["c-1"]
    assert "share_agreement" in refused.json()["detail"]
    assert (await client.get("/api/v1/companies/c-2", headers=headers)).json()["mapping"] is None  # nothing changed

    meant = await client.put("/api/v1/companies/c-2/mapping", json={**body, "share_agreement": True}, headers=headers)
    assert meant.status_code == 200, meant.text
    await client.patch("/api/v1/companies/c-2/billing", json={"enabled": True}, headers=headers)
    await Worker(ctx, full_reconcile_every=None).drain()

    texts = [str(a.get("invoiceDescription") or "") for a in sandbox.store.additions_of(agreement)]
    assert any("Contoso East" in t for t in texts), texts
    assert any("Contoso West" in t for t in texts)
    assert all(("Contoso East" in t) != ("Contoso West" in t) for t in texts), texts  # each names one company
    for company_id in ("c-1", "c-2"):
        status = (await client.get(f"/api/v1/companies/{company_id}/sync", headers=headers)).json()
        assert status["status"] == "in_sync", status
    recon = (await client.get("/api/v1/reconciliation", headers=headers)).json()
    assert {r["company_id"]: r["untracked_additions"] for r in recon["items"]} == {"c-1": [], "c-2": []}


async def test_a_line_one_company_adopted_is_never_adopted_by_the_other_and_a_re_save_is_not_refused(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext, sandbox: Sandbox
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    product = (await client.get("/api/v1/billing/product", headers=headers)).json()["cw_catalog_item_id"]
    msp_line = sandbox.store.create_addition(
        1,
        {
            "product": {"id": product},
            "billCustomer": "Billable",
            "quantity": 5,
            "effectiveDate": "2026-10-01T00:00:00Z",
        },
    )
    first = await mapped_company(client, tenant, headers, company_id="c-1", name="Contoso East", licenses=5)
    assert first["mapping"]["base_addition_id"] == msp_line["id"]
    assert first["mapping"]["adopted"] is True
    body = {"cw_company_id": first["mapping"]["cw_company_id"], "cw_agreement_id": first["mapping"]["cw_agreement_id"]}
    again = await client.put("/api/v1/companies/c-1/mapping", json=body, headers=headers)
    assert again.status_code == 200  # the same mapping saved again is not "another company"

    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-2", "name": "Contoso West"}},
    )
    await Worker(ctx, full_reconcile_every=None).drain()
    second = await client.put("/api/v1/companies/c-2/mapping", json={**body, "share_agreement": True}, headers=headers)
    assert second.status_code == 200, second.text
    assert second.json()["mapping"]["adopted"] is False  # c-1 bills from that line already
    assert second.json()["mapping"]["base_addition_id"] != msp_line["id"]
