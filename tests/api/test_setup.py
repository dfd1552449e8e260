"""The MSP's setup story through the API, against the in-process ConnectWise sandbox."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.db.base import Base
from app.security.encryption import SecretBox, generate_key
from app.services.keys import reencrypt_all
from tests.api.setup_helpers import CONNECTION, configured_tenant, connect, mapped_company
from tests.conftest import TEST_ENCRYPTION_KEY, TenantFactory, bearer
from tests.webhook_helpers import deliver


async def test_the_whole_setup_with_and_without_an_override(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme MSP")
    headers = await bearer(client, tenant)

    saved = await client.put("/api/v1/connectwise/connection", json=CONNECTION, headers=headers)
    assert saved.status_code == 200
    assert saved.json() == {
        **{k: saved.json()[k] for k in ("updated_at",)},
        "site_url": CONNECTION["site_url"],
        "company_id": "sandbox",
        "public_key": "sandbox-public",
        "private_key_set": True,
        "client_id_set": True,
    }
    test = (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()
    assert test["ok"] is True, test
    assert [c["name"] for c in test["checks"]] == [
        "codebase",
        "system_info",
        "read_companies",
        "read_agreements",
        "read_catalog",
        "add_additions",
        "edit_additions",
    ]
    assert sandbox.store.additions.rows == {}  # the permission probes created nothing

    settings = await client.patch(
        "/api/v1/billing/settings", headers=headers, json={"enabled": True, "timezone": "Europe/Berlin"}
    )
    assert settings.json()["enabled"] is True

    options = (await client.get("/api/v1/connectwise/catalog/options", headers=headers)).json()
    created = await client.post(
        "/api/v1/billing/product",
        headers=headers,
        json={
            "identifier": "VEND-AV",
            "description": "Vendor antivirus",
            "customer_description": "AV per device",
            "subcategory_id": options["subcategories"][0]["id"],
            "type_id": options["types"][0]["id"],
            "unit_of_measure_id": options["units_of_measure"][0]["id"],
            "unit_price": "2.75",
            "unit_cost": "1.10",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["identifier"] == "VEND-AV"
    assert any(r["identifier"] == "VEND-AV" for r in sandbox.store.catalog.rows.values())
    defaults = await client.patch(
        "/api/v1/billing/product", json={"unit_price": "3.00", "unit_cost": "1.00"}, headers=headers
    )
    assert (defaults.json()["unit_price"], defaults.json()["unit_cost"]) == ("3.00", "1.00")

    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso", "identifier": "CONTOSO"}},
    )
    suggestions = (await client.get("/api/v1/companies/c-42/suggestions", headers=headers)).json()
    assert suggestions[0]["identifier"] == "CONTOSO"
    assert suggestions[0]["reason"] == "exact_identifier"
    assert suggestions[0]["auto_applicable"] is True

    agreements = (
        await client.get(f"/api/v1/connectwise/companies/{suggestions[0]['cw_company_id']}/agreements", headers=headers)
    ).json()
    assert agreements[0]["billing_cycle"] == "Monthly"
    mapped = await client.put(
        "/api/v1/companies/c-42/mapping",
        headers=headers,
        json={"cw_company_id": suggestions[0]["cw_company_id"], "cw_agreement_id": agreements[0]["id"]},
    )
    assert mapped.status_code == 200, mapped.text
    assert mapped.json()["mapping"]["agreement_name"] == "Managed Services"

    enabled = (await client.patch("/api/v1/companies/c-42/billing", json={"enabled": True}, headers=headers)).json()
    assert enabled["billing_enabled"] is True
    assert enabled["pricing"] | {} == {
        "unit_price": "3.00",
        "unit_cost": "1.00",
        "price_source": "product_default",
        "cost_source": "product_default",
        "unit_price_override": None,
        "unit_cost_override": None,
    }
    override = (
        await client.patch("/api/v1/companies/c-42/billing", json={"unit_price": "2.5"}, headers=headers)
    ).json()
    assert (override["pricing"]["unit_price"], override["pricing"]["price_source"]) == ("2.50", "override")
    assert override["pricing"]["unit_cost"] == "1.00"
    cleared = (await client.patch("/api/v1/companies/c-42/billing", json={"unit_price": None}, headers=headers)).json()
    assert (cleared["pricing"]["unit_price"], cleared["pricing"]["price_source"]) == ("3.00", "product_default")
    listed = (await client.get("/api/v1/companies", params={"mapped": True}, headers=headers)).json()
    assert [c["company_id"] for c in listed["items"]] == ["c-42"]
    assert listed["items"][0]["sync"]["due"] is True  # a reconcile is scheduled for the sync engine

    audit = (await client.get("/api/v1/audit-events", headers=headers)).json()
    actions = {e["action"] for e in audit["items"]}
    assert {
        "cw_connection.saved",
        "billing_settings.changed",
        "billing_product.created",
        "billing_product.defaults_changed",
        "company.mapped",
        "company.billing_changed",
    } <= actions
    price_change = next(
        e
        for e in audit["items"]
        if e["action"] == "company.billing_changed"
        and e["after"].get("unit_price") == "2.50"  # one money format everywhere
    )
    assert price_change["before"] == {"unit_price": None}
    assert all(CONNECTION["private_key"] not in str(e) for e in audit["items"])


async def test_mapping_adopts_an_existing_addition(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    existing = sandbox.store.create_addition(1, {"product": {"id": 1}, "billCustomer": "Billable", "quantity": 5})
    company = await mapped_company(client, tenant, headers)
    assert company["mapping"]["base_addition_id"] == existing["id"]
    assert company["mapping"]["adopted"] is True
    assert len(sandbox.store.additions_of(1)) == 1


def _problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    for word in words:
        assert word.lower() in (body.get("detail") or "").lower(), (word, body)
    return body


async def test_mapping_rejections_say_why(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await bearer(client, tenant)
    await connect(client, headers)
    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-1", "name": "Contoso"}},
    )
    url = "/api/v1/companies/c-1/mapping"
    _problem(
        await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers),
        422,
        "map the product first",
    )
    headers = await configured_tenant(client, tenant)
    store = sandbox.store
    assert store is not None
    _problem(
        await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 2}, headers=headers),
        422,
        "belongs to",
        "Fabrikam",
    )
    _problem(
        await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 999}, headers=headers),
        422,
        "no agreement 999",
    )
    store.agreements.get(1)["cancelledFlag"] = True
    _problem(await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers), 422, "cancelled")
    store.agreements.get(1)["cancelledFlag"] = False
    store.agreements.get(1).update({"endDate": "2025-12-31T00:00:00Z", "noEndingDateFlag": False})
    _problem(await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers), 422, "expired")
    store.agreements.get(1).pop("endDate")
    store.agreements.get(1)["noEndingDateFlag"] = True
    store.agreements.get(1)["billingCycle"] = {"id": 5, "name": "One Time"}
    _problem(
        await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers), 422, "NotRecurring"
    )
    store.agreements.get(1)["billingCycle"] = {"id": 1, "name": "Monthly"}
    store.companies.get(1)["deletedFlag"] = True
    _problem(
        await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers), 422, "recycle bin"
    )
    store.companies.get(1)["deletedFlag"] = False
    a = store.create_addition(1, {"product": {"id": 1}, "billCustomer": "Billable", "quantity": 2})
    b = store.create_addition(1, {"product": {"id": 1}, "billCustomer": "Billable", "quantity": 3})
    several = _problem(
        await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers),
        422,
        f"ids {a['id']}, {b['id']}",
    )
    assert several["addition_ids"] == [a["id"], b["id"]]
    store.additions.get(b["id"])["cancelledDate"] = "2026-01-31T00:00:00Z"
    ok = await client.put(url, json={"cw_company_id": 1, "cw_agreement_id": 1}, headers=headers)
    assert ok.status_code == 200
    assert ok.json()["mapping"]["base_addition_id"] == a["id"]


async def test_product_rejections_say_why(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await bearer(client, tenant)
    _problem(
        await client.put("/api/v1/billing/product", json={"cw_catalog_item_id": 1}, headers=headers),
        409,
        "connect connectwise first",
    )
    await connect(client, headers)
    bundle = next(r for r in sandbox.store.catalog.rows.values() if r["productClass"] == "Bundle")
    _problem(
        await client.put("/api/v1/billing/product", json={"cw_catalog_item_id": bundle["id"]}, headers=headers),
        422,
        "Bundle item",
    )
    _problem(
        await client.put("/api/v1/billing/product", json={"cw_catalog_item_id": 4242}, headers=headers),
        422,
        "no catalog item 4242",
    )
    sandbox.store.catalog.get(1)["inactiveFlag"] = True
    _problem(
        await client.put("/api/v1/billing/product", json={"cw_catalog_item_id": 1}, headers=headers), 422, "inactive"
    )
    duplicate = await client.post(
        "/api/v1/billing/product",
        headers=headers,
        json={
            "identifier": "VEND-EDR",
            "description": "x",
            "customer_description": "x",
            "subcategory_id": 1,
            "type_id": 1,
            "unit_price": "1",
            "unit_cost": "1",
        },
    )
    assert _problem(duplicate, 409, "already exists")["cw_catalog_item_id"] == 1
    _problem(
        await client.patch("/api/v1/billing/product", json={"unit_price": "1"}, headers=headers),
        409,
        "map a product first",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"unit_price": "-1"}, "unit_price"),
        ({"unit_price": "1.00001"}, "unit_price"),
        ({"unit_cost": "abc"}, "unit_cost"),
        ({"enabled": "maybe"}, "enabled"),
    ],
)
async def test_edit_billing_validation(
    client: httpx.AsyncClient, make_tenant: TenantFactory, body: dict[str, str], field: str
) -> None:
    tenant = await make_tenant("Acme")
    headers = await bearer(client, tenant)
    await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-1", "name": "Contoso"}},
    )
    response = await client.patch("/api/v1/companies/c-1/billing", json=body, headers=headers)
    assert response.status_code == 422
    assert field in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"timezone": "Mars/Olympus"}, "Unknown timezone"),
        ({"currency": "usd"}, "currency"),
        ({"proration_mode": "daily"}, "proration_mode"),
        ({"decrease_policy": "refund"}, "decrease_policy"),
    ],
)
async def test_settings_validation(
    client: httpx.AsyncClient, make_tenant: TenantFactory, body: dict[str, str], word: str
) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    response = await client.patch("/api/v1/billing/settings", json=body, headers=headers)
    assert response.status_code == 422
    assert word in response.json()["detail"]


async def test_first_connection_needs_the_secrets(client: httpx.AsyncClient, make_tenant: TenantFactory) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    partial = {k: v for k, v in CONNECTION.items() if k != "private_key"}
    _problem(await client.put("/api/v1/connectwise/connection", json=partial, headers=headers), 422)
    await connect(client, headers)
    # Later saves may leave the secrets out: the stored ones are kept.
    assert (await client.put("/api/v1/connectwise/connection", json=partial, headers=headers)).status_code == 200
    assert (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()["ok"] is True


async def test_wrong_keys_fail_the_connection_test_with_a_reason(
    client: httpx.AsyncClient, make_tenant: TenantFactory
) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    await client.put("/api/v1/connectwise/connection", json={**CONNECTION, "private_key": "nope"}, headers=headers)
    result = (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()
    assert result["ok"] is False
    failed = [c for c in result["checks"] if not c["ok"]]
    assert failed[0]["name"] == "system_info"
    assert "credentials" in failed[0]["detail"]


async def test_missing_permission_is_named_in_the_connection_test(
    sandbox: Sandbox, client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    await connect(client, headers)
    sandbox.forbidden |= {("POST", "addition"), ("PATCH", "addition")}
    result = (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()
    by_name = {c["name"]: c for c in result["checks"]}
    assert result["ok"] is False
    assert by_name["read_agreements"]["ok"] is True
    assert by_name["add_additions"]["ok"] is False
    assert "security role" in by_name["add_additions"]["detail"]
    assert by_name["edit_additions"]["ok"] is False


async def _all_text(engine: AsyncEngine) -> str:
    chunks = []
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = (await conn.execute(text(f"SELECT * FROM {table.name}"))).all()  # noqa: S608
            chunks += [repr(tuple(row)) for row in rows]
    return "\n".join(chunks)


async def test_database_never_holds_the_cw_secrets_in_plaintext(
    client: httpx.AsyncClient, make_tenant: TenantFactory, engine: AsyncEngine, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await bearer(client, tenant)
    await connect(client, headers)
    dump = await _all_text(engine)
    assert CONNECTION["private_key"] not in dump
    assert CONNECTION["client_id"] not in dump
    assert tenant.webhook_secret not in dump
    assert tenant.client_secret not in dump
    # GET never returns them either.
    shown = (await client.get("/api/v1/connectwise/connection", headers=headers)).text
    assert CONNECTION["private_key"] not in shown
    assert CONNECTION["client_id"] not in shown

    # Rotation: a new key first, the old one still configured → every row re-encrypted and readable.
    new_key = generate_key()
    rotated_box = SecretBox([new_key, TEST_ENCRYPTION_KEY])
    async with ctx.sessionmaker() as s, s.begin():
        assert await reencrypt_all(s, box=rotated_box) >= 3
    new_only = SecretBox([new_key])
    original_box = ctx.secrets
    ctx.secrets = new_only  # the old key is gone from the configuration
    try:
        result = (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()
        assert result["ok"] is True
        body = '{"type": "company.upserted", "data": {"company_id": "c-9", "name": "After rotation"}}'
        from tests.webhook_helpers import signed_headers

        accepted = await client.post(
            f"/webhooks/portal/{tenant.tenant_id}", content=body, headers=signed_headers(tenant.webhook_secret, body)
        )
        assert accepted.status_code == 202
    finally:
        ctx.secrets = original_box


async def test_a_ciphertext_moved_to_another_tenant_does_not_decrypt(
    client: httpx.AsyncClient, make_tenant: TenantFactory, engine: AsyncEngine
) -> None:
    a, b = await make_tenant("A"), await make_tenant("B")
    headers_a, headers_b = await bearer(client, a), await bearer(client, b)
    await connect(client, headers_a)
    await client.put("/api/v1/connectwise/connection", json={**CONNECTION, "private_key": "b-key"}, headers=headers_b)
    async with engine.begin() as conn:
        stolen = (
            await conn.execute(
                text("SELECT private_key_encrypted FROM cw_connection WHERE tenant_id = :t"), {"t": a.tenant_id}
            )
        ).scalar_one()
        await conn.execute(
            text("UPDATE cw_connection SET private_key_encrypted = :v WHERE tenant_id = :t"),
            {"v": stolen, "t": b.tenant_id},
        )
    refused = _problem(
        await client.post("/api/v1/connectwise/connection/test", headers=headers_b), 409, "re-enter the private key"
    )
    assert refused["code"] == "cw_connection_unreadable"


async def test_absurd_prices_are_422_not_500(client: httpx.AsyncClient, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant)
    for value in (4.922729284193401e28, "1e30", "NaN", -1):
        response = await client.patch("/api/v1/billing/product", json={"unit_price": value}, headers=headers)
        assert response.status_code == 422, (value, response.text)
        assert "unit_price" in response.json()["detail"]


async def test_company_search_treats_percent_and_underscore_as_text(
    client: httpx.AsyncClient, make_tenant: TenantFactory
) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    for company_id, name in (
        ("c-1", "50% Off Store"),
        ("c-2", "500 Offices"),
        ("c-3", "a_b Labs"),
        ("c-4", "axb Labs"),
    ):
        put = await client.put(f"/api/v1/companies/{company_id}", headers=headers, json={"name": name})
        assert put.status_code == 200, put.text

    async def found(search: str) -> list[str]:
        page = (await client.get("/api/v1/companies", headers=headers, params={"search": search})).json()
        return sorted(c["company_id"] for c in page["items"])

    assert await found("50%") == ["c-1"]
    assert await found("a_b") == ["c-3"]
    assert await found("%") == ["c-1"]
    assert await found("labs") == ["c-3", "c-4"]
