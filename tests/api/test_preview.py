"""The preview shows the lines the sync will write (to the cent, naming the invoice), changes nothing, and says when
nothing will be billed; the charges and periods views show the history and the money of each period.

The clock stands on 10 November 2026 when the company is mapped (billing starts then, 1 license) and moves on from
there; every amount is worked out by hand beside it."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.db.models import LicenseChange
from app.sync.worker import Worker
from tests.api.setup_helpers import configured_tenant, mapped_company, synced_company
from tests.conftest import TenantFactory
from tests.webhook_helpers import deliver, license_event


@pytest.fixture(autouse=True)
def tenth_of_november(ctx: AppContext) -> None:
    ctx.clock.freeze(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))


def lines_of(sandbox: Sandbox, agreement: int = 1) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for a in sandbox.store.additions_of(agreement):
        kind = {"b": "base", "p": "proration", "a": "catch_up"}.get(str(a.get("serialNumber", "")).split(":")[2][:1])
        found.setdefault(kind or "other", []).append(a)
    return found


async def setup(client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext) -> tuple[dict[str, str], str]:
    tenant, headers = await synced_company(client, make_tenant, ctx, licenses=1)  # 1 since 1 Oct; billed from 10 Nov
    return headers, tenant.webhook_secret


async def test_preview_then_the_real_change_agree_to_the_cent(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    headers, secret = await setup(client, make_tenant, ctx)
    writes_before = sandbox.store.writes
    ctx.clock.freeze(datetime(2026, 11, 16, 15, 0, tzinfo=UTC))
    preview = await client.post(
        "/api/v1/companies/c-42/license-changes/preview",
        headers=headers,
        json={"license_count": 9, "effective_at": "2026-11-16T14:03:00Z"},
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["base_before"]["quantity"], body["base_after"]["quantity"]) == (1, 9)  # December's base line
    # November from the 10th: 21 days × 1 = 21 seat-days → 2.10; with the change 6 × 1 + 15 × 9 = 141 → 14.10.
    assert (body["proration_before"]["amount"], body["proration_after"]["amount"]) == ("2.10", "14.10")
    assert body["proration_change"] == "12.00"  # the classic +8 × 3.00 × 15/30
    assert body["billed_with"] == {"start": "2026-12-01", "end": "2026-12-31", "days": 31}
    assert body["will_bill"] is True
    assert body["message"].startswith("Licenses 1 → 9 on 16 Nov 2026 will be applied to agreement 'Managed Services'")
    assert "on the invoice for 1–31 Dec 2026" in body["message"]
    assert {(op["action"], op["line"]) for op in body["operations"]} == {("patch", "proration"), ("patch", "base")}
    async with ctx.sessionmaker() as s:  # nothing changed: no history row, no CW write
        assert await s.scalar(select(func.count()).select_from(LicenseChange)) == 1
    assert sandbox.store.writes == writes_before

    tenant_id = (await client.get("/api/v1/companies/c-42", headers=headers)).json()
    assert tenant_id["license_count"] == 1
    await deliver(
        client,
        await _tenant_id(ctx),
        secret,
        license_event("c-42", 9, sequence=2, previous=1, effective_at="2026-11-16T14:03:00Z"),
    )
    await Worker(ctx, full_reconcile_every=None).drain()
    lines = lines_of(sandbox)
    (proration,) = lines["proration"]
    assert str(proration["unitPrice"]) in ("14.1", "14.10")
    assert str(proration["effectiveDate"]).startswith("2026-12-01")
    assert [b["quantity"] for b in lines["base"]] == [9]


async def _tenant_id(ctx: AppContext) -> str:
    from app.db.models import Tenant

    async with ctx.sessionmaker() as s:
        return (await s.scalars(select(Tenant.id))).one()


async def test_a_preview_says_when_nothing_will_be_billed(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    headers, _ = await setup(client, make_tenant, ctx)
    await client.patch("/api/v1/companies/c-42/billing", json={"enabled": False}, headers=headers)
    body = (
        await client.post("/api/v1/companies/c-42/license-changes/preview", headers=headers, json={"license_count": 4})
    ).json()
    assert body["will_bill"] is False
    assert "billing is not enabled for the company" in body["not_billed_because"]
    assert "but nothing will be billed" in body["message"]
    assert "proration line" not in body["message"]
    await client.patch("/api/v1/companies/c-42/billing", json={"enabled": True}, headers=headers)
    await client.patch("/api/v1/billing/settings", json={"enabled": False}, headers=headers)
    off = (
        await client.post("/api/v1/companies/c-42/license-changes/preview", headers=headers, json={"license_count": 4})
    ).json()
    assert (off["will_bill"], off["not_billed_because"]) == (False, "billing is off for the tenant")


async def test_a_backdated_change_becomes_a_catch_up_and_a_future_one_takes_effect_on_its_day(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    headers, _ = await setup(client, make_tenant, ctx)
    ctx.clock.freeze(datetime(2026, 12, 5, 9, 0, tzinfo=UTC))
    await Worker(ctx, full_reconcile_every=None).drain()
    backdated = (
        await client.post(
            "/api/v1/companies/c-42/license-changes/preview",
            headers=headers,
            json={"license_count": 3, "effective_at": "2026-11-20T09:00:00Z"},
        )
    ).json()
    # November's lines are frozen (December began): 2 more licenses for 20–30 Nov (11 days) = 2 × 3.00 × 11/30
    # = 2.20, and December's base billed 1 instead of 3 = 6.00: an adjustment of 8.20 with January's invoice.
    assert backdated["catch_up"] == "8.20"
    assert backdated["billed_with"] == {"start": "2027-01-01", "end": "2027-01-31", "days": 31}
    assert (
        "already billed (1–30 Nov 2026): an adjustment of $8.20 goes on the invoice for 1–31 Jan 2027"
        in (backdated["message"])
    )
    future = (
        await client.post(
            "/api/v1/companies/c-42/license-changes/preview",
            headers=headers,
            json={"license_count": 2, "effective_at": "2026-12-20T09:00:00Z"},
        )
    ).json()
    assert "it takes effect on 20 Dec 2026" in future["message"]
    assert future["proration_after"]["amount"] == "1.16"  # +1 × 3.00 × 12/31 (20–31 Dec) = 1.161…


async def test_charges_show_the_history_of_a_period_and_flag_a_previous_count_that_disagrees(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    headers, secret = await setup(client, make_tenant, ctx)
    tenant_id = await _tenant_id(ctx)
    for seq, (count, previous, when) in enumerate(
        [(9, 1, "2026-11-16T14:03:00Z"), (5, 7, "2026-11-21T09:00:00Z")], start=2
    ):
        await deliver(
            client, tenant_id, secret, license_event("c-42", count, sequence=seq, previous=previous, effective_at=when)
        )
    charges = (
        await client.get("/api/v1/companies/c-42/charges", params={"period": "2026-11-18"}, headers=headers)
    ).json()
    assert charges["period"] == {"start": "2026-11-01", "end": "2026-11-30", "days": 30}
    assert (charges["billed_quantity"], charges["new_customer_from"]) == (0, "2026-11-10")
    assert [(e["license_count"], e["previous_count_agrees"]) for e in charges["entries"]] == [(9, True), (5, False)]
    assert charges["entries"][1]["history_count_before"] == 9  # the portal said 7; the history says 9
    # From the 10th: 6 days × 1 + 5 days × 9 + 10 days × 5 = 101 seat-days × 3.00 / 30 = 10.10
    assert (charges["seat_days"], charges["amount"], charges["owed"]) == (101, "10.10", "10.10")
    assert charges["description"].endswith("= $10.10")
    bad = await client.get("/api/v1/companies/c-42/charges", params={"period": "not-a-date"}, headers=headers)
    assert bad.status_code == 422


async def test_periods_show_the_lines_that_bill_them_and_what_cw_invoiced(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    headers, secret = await setup(client, make_tenant, ctx)
    await deliver(
        client,
        await _tenant_id(ctx),
        secret,
        license_event("c-42", 9, sequence=2, effective_at="2026-11-16T14:03:00Z"),
    )
    await Worker(ctx, full_reconcile_every=None).drain()
    ctx.clock.freeze(datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    for _ in range(12):  # January 2026 to December: the agreement bills from 1 January
        sandbox.invoicing.invoice(1)
    body = (await client.get("/api/v1/companies/c-42/periods", params={"from": "2026-11-01"}, headers=headers)).json()
    assert body["invoices_read"] is True
    november, december = body["periods"]
    assert (november["owed"], november["billed"], november["billed_quantity"]) == ("14.10", "14.10", 0)
    assert [(line["line"], line["amount"], line["billed_with"], line["frozen"]) for line in november["lines"]] == [
        ("proration", "14.10", "2026-12-01", True)
    ]
    assert november["cw_invoice"] is not None  # the November invoice (nothing of ours on it) exists
    assert november["state"] == "settled"  # its proration line was billed with December, whose invoice exists
    assert (december["owed"], december["state"]) == ("27.00", "open")  # 9 × 3.00 in advance; December runs
    assert december["cw_invoice"]["date"] == "2026-12-01"
    bad = await client.get(
        "/api/v1/companies/c-42/periods", params={"from": "2026-12-01", "to": "2026-11-01"}, headers=headers
    )
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
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    await client.patch("/api/v1/billing/settings", json={"sync_mode": "review"}, headers=headers)
    await mapped_company(client, tenant, headers, licenses=4)
    sync = Worker(ctx, full_reconcile_every=None)
    await sync.drain()
    assert sandbox.store.additions_of(1) == []
    status = (await client.get("/api/v1/companies/c-42/sync", headers=headers)).json()
    assert status["status"] == "awaiting_approval"
    assert {op["kind"] for op in status["pending_change_set"]["operations"]} == {"create"}
    recon = (await client.get("/api/v1/reconciliation", headers=headers)).json()
    assert recon["items"][0]["in_step"] is False
    assert any("waiting for approval" in p for p in recon["items"][0]["problems"])
    approved = await client.post("/api/v1/reconciliation/approve", json={}, headers=headers)
    assert approved.json() == {"approved": ["c-42"]}
    await sync.drain()
    assert [a["quantity"] for a in lines_of(sandbox)["base"]] == [4]
    recon = (await client.get("/api/v1/reconciliation", headers=headers)).json()
    assert recon["items"][0]["in_step"] is True, recon
    assert (recon["items"][0]["portal_count"], recon["items"][0]["cw_quantity"]) == (4, "4")
    assert (recon["total"], recon["discrepancies"]) == (1, 0)
    nothing = await client.post("/api/v1/companies/c-42/sync", json={"approve": True}, headers=headers)
    assert nothing.status_code == 409
    audit = (await client.get("/api/v1/audit-events", params={"object_id": "c-42"}, headers=headers)).json()
    assert {"change_set.approved", "cw.addition.created"} <= {e["action"] for e in audit["items"]}


async def test_a_preview_that_would_delete_a_line_answers_with_it(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    """Found by schemathesis from the recorded examples: a change back to 0 before the next period starts removes a
    base line that never billed; the preview said so with a 500 instead of listing the delete."""
    headers, _ = await setup(client, make_tenant, ctx)
    ctx.clock.freeze(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    preview = await client.post(
        "/api/v1/companies/c-42/license-changes/preview",
        headers=headers,
        json={"license_count": 0, "effective_at": "2026-11-10T08:00:00Z"},
    )
    assert preview.status_code == 200, preview.text
    assert "delete" in {op["action"] for op in preview.json()["operations"]}
