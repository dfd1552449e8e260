"""Tenant A's token never reaches tenant B's objects: every id-bearing route is enumerated from the router, so a
route added later fails this test until it is classified here."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI

from tests.api.setup_helpers import configured_tenant, mapped_company
from tests.conftest import TenantFactory
from tests.webhook_helpers import deliver, license_event

# Path parameters naming a tenant-owned object, and the object of tenant B each one is tested with.
TENANT_OBJECT_PARAMS = {"company_id": "c-42", "webhook_id": "b-delivery"}
# Path parameters naming an object in the caller's own ConnectWise (reached through the caller's connection).
CW_SCOPED_PARAMS = {"cw_company_id"}
# Path parameters that select the tenant itself, authenticated by the webhook signature instead of a token.
SIGNATURE_SCOPED_PARAMS = {"tenant_id"}
# Upserts create the caller's own object under that id: they must not touch or reveal B's.
UPSERT_ROUTES = {("PUT", "/api/v1/companies/{company_id}")}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/api/v1/companies/{company_id}"): {"name": "Mine"},
    ("PUT", "/api/v1/companies/{company_id}/mapping"): {"cw_company_id": 1, "cw_agreement_id": 1},
    ("PATCH", "/api/v1/companies/{company_id}/billing"): {"enabled": False, "unit_price": "9.99"},
    ("POST", "/api/v1/companies/{company_id}/license-changes/preview"): {"license_count": 5},
    ("POST", "/api/v1/companies/{company_id}/sync"): {},
}


def _id_routes(app: FastAPI) -> list[tuple[str, str, set[str]]]:
    """Every (method, path) with path parameters, from the app's own OpenAPI document (all routes are in it)."""
    routes: list[tuple[str, str, set[str]]] = []
    for path, operations in app.openapi()["paths"].items():
        params = set(re.findall(r"{(\w+)}", path))
        if params:
            routes.extend((method.upper(), path, params) for method in sorted(operations))
    assert routes, "no id-bearing routes found: the enumeration is broken"
    return routes


async def test_every_id_bearing_route_is_classified(app: FastAPI) -> None:
    known = set(TENANT_OBJECT_PARAMS) | CW_SCOPED_PARAMS | SIGNATURE_SCOPED_PARAMS
    unclassified = [(m, p) for m, p, params in _id_routes(app) if not params <= known]
    assert unclassified == []


async def test_tenant_a_gets_404_on_every_tenant_b_object(
    app: FastAPI, client: httpx.AsyncClient, make_tenant: TenantFactory
) -> None:
    a, b = await make_tenant("A"), await make_tenant("B")
    headers_a = await configured_tenant(client, a)
    headers_b = await configured_tenant(client, b)
    b_company = await mapped_company(client, b, headers_b, licenses=7)
    await deliver(client, b.tenant_id, b.webhook_secret, license_event("c-42", 7, sequence=2), webhook_id="b-delivery")
    b_company = (await client.get("/api/v1/companies/c-42", headers=headers_b)).json()
    checked = 0
    # Upserts last: they create A's own object under the same id, which later routes would then find.
    ordered = sorted(_id_routes(app), key=lambda r: (r[0], r[1]) in UPSERT_ROUTES)
    for method, path, params in ordered:
        if not params & set(TENANT_OBJECT_PARAMS) or params & SIGNATURE_SCOPED_PARAMS:
            continue
        url = path
        for name in params:
            url = url.replace("{" + name + "}", TENANT_OBJECT_PARAMS.get(name, "1"))
        query = {"period": "2026-11-16"} if path.endswith("/charges") else None
        response = await client.request(method, url, headers=headers_a, json=BODIES.get((method, path)), params=query)
        checked += 1
        assert "Contoso" not in response.text or (method, path) in UPSERT_ROUTES, (method, path, response.text)
        if (method, path) in UPSERT_ROUTES:
            assert response.status_code == 200, (method, path)
            assert response.json()["license_count"] == 0  # A's own new company, not B's
        else:
            assert response.status_code == 404, (method, path, response.status_code, response.text)
    assert checked >= 5
    after = (await client.get("/api/v1/companies/c-42", headers=headers_b)).json()
    assert after == b_company | {"sync": after["sync"]}  # B's company is untouched


async def test_lists_only_show_the_callers_objects(client: httpx.AsyncClient, make_tenant: TenantFactory) -> None:
    a, b = await make_tenant("A"), await make_tenant("B")
    headers_a = await configured_tenant(client, a)
    headers_b = await configured_tenant(client, b)
    await mapped_company(client, b, headers_b)
    assert (await client.get("/api/v1/companies", headers=headers_a)).json()["items"] == []
    audit_a = (await client.get("/api/v1/audit-events", headers=headers_a)).json()["items"]
    assert all(e["object_id"] != "c-42" for e in audit_a)
