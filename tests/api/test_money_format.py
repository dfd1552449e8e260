"""Money has one format in every answer: a decimal string with at least two places (more only for prices that have
them), whether it comes from the database, from ConnectWise (which answers `2.5`) or from the audit trail."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.context import AppContext
from app.sync.worker import Worker
from tests.api.setup_helpers import configured_tenant, mapped_company
from tests.conftest import TenantFactory
from tests.webhook_helpers import deliver, license_event

MONEY = re.compile(r"^-?\d+\.\d{2,4}$")
MONEY_KEYS = {"unit_price", "unit_cost", "price", "cost", "amount", "cw_unit_price", "cw_unit_cost", "owed"}


def money_values(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every value held under a money key, anywhere in a JSON answer."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in money_values(v, k)]
    if isinstance(value, list):
        return [pair for v in value for pair in money_values(v, key)]
    return [(key, value)] if key in MONEY_KEYS and value is not None else []


@pytest.fixture(autouse=True)
def tenth_of_november(ctx: AppContext) -> None:
    ctx.clock.freeze(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))


async def test_every_answer_writes_money_the_same_way(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await configured_tenant(client, tenant, price="3", cost="1")
    await mapped_company(client, tenant, headers, licenses=2)
    await client.patch("/api/v1/companies/c-42/billing", json={"unit_price": 2.5, "unit_cost": "1.1"}, headers=headers)
    await Worker(ctx, full_reconcile_every=None).drain()
    ctx.clock.freeze(datetime(2026, 11, 16, 9, 0, tzinfo=UTC))
    await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-42", 5, sequence=2))
    await Worker(ctx, full_reconcile_every=None).drain()

    answers = {
        path: (await client.get(path, headers=headers)).json()
        for path in (
            "/api/v1/companies/c-42",
            "/api/v1/companies",
            "/api/v1/companies/c-42/sync",  # what CW holds, as read back from it
            "/api/v1/reconciliation",
            "/api/v1/companies/c-42/charges",
            "/api/v1/companies/c-42/periods",
            "/api/v1/billing/product",
            "/api/v1/audit-events",
        )
    }
    preview = await client.post(
        "/api/v1/companies/c-42/license-changes/preview", json={"license_count": 7}, headers=headers
    )
    answers["preview"] = preview.json()
    seen = {path: money_values(body) for path, body in answers.items()}
    assert all(seen.values()), {p: len(v) for p, v in seen.items()}  # every answer does show money
    wrong = {
        path: [(k, v) for k, v in found if not (isinstance(v, str) and MONEY.match(v))] for path, found in seen.items()
    }
    assert {p: w for p, w in wrong.items() if w} == {}
    company = answers["/api/v1/companies/c-42"]["pricing"]
    assert (company["unit_price"], company["unit_cost"]) == ("2.50", "1.10")
    held = answers["/api/v1/companies/c-42/sync"]["cw_additions"]
    assert {a["unit_price"] for a in held.values()} >= {"2.50"}  # CW answered 2.5
