"""Fixing the CW credentials brings stuck companies back: the connection test says which check failed and, once
every check passes, queues the companies whose sync failed again; a bulk retry does the same on demand."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from app.context import AppContext
from app.services.tenants import NewTenant
from app.sync.worker import Worker
from tests.api.setup_helpers import CONNECTION, synced_company
from tests.conftest import TenantFactory
from tests.webhook_helpers import deliver, license_event


@pytest.fixture(autouse=True)
def tenth_of_november(ctx: AppContext) -> None:
    ctx.clock.freeze(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))


async def _status(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    body = (await client.get("/api/v1/companies/c-42/sync", headers=headers)).json()
    return str(body["status"])


async def _fail_on_a_wrong_key(
    client: httpx.AsyncClient, tenant: NewTenant, headers: dict[str, str], ctx: AppContext
) -> None:
    """Save a wrong private key, then a license change: CW refuses the keys, and retrying cannot fix that."""
    wrong = {**CONNECTION, "private_key": "not-the-key"}
    assert (await client.put("/api/v1/connectwise/connection", json=wrong, headers=headers)).status_code == 200
    await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-42", 5, sequence=2))
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _status(client, headers) == "failed"


async def test_a_passing_connection_test_requeues_what_failed_on_bad_keys(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant, headers = await synced_company(client, make_tenant, ctx, licenses=3)
    assert await _status(client, headers) == "in_sync"

    await _fail_on_a_wrong_key(client, tenant, headers, ctx)

    tested = (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()
    checks = {c["name"]: c for c in tested["checks"]}
    assert tested["ok"] is False
    assert tested["requeued"] == 0
    assert checks["codebase"]["ok"] is True
    assert "codebase" in checks["codebase"]["detail"]
    assert "?" not in checks["codebase"]["detail"]
    assert checks["system_info"]["ok"] is False  # says which check failed, and why

    assert (await client.put("/api/v1/connectwise/connection", json=CONNECTION, headers=headers)).status_code == 200
    tested = (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()
    assert tested["ok"] is True, tested
    assert tested["requeued"] == 1
    assert await _status(client, headers) == "pending"
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _status(client, headers) == "in_sync"


async def test_a_bulk_retry_queues_every_failed_company(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant, headers = await synced_company(client, make_tenant, ctx, licenses=3)
    await _fail_on_a_wrong_key(client, tenant, headers, ctx)
    await client.put("/api/v1/connectwise/connection", json=CONNECTION, headers=headers)
    retried = await client.post("/api/v1/reconciliation/retry", headers=headers)
    assert retried.json() == {"requeued": 1}
    await Worker(ctx, full_reconcile_every=None).drain()
    assert await _status(client, headers) == "in_sync"
    again = await client.post("/api/v1/reconciliation/retry", headers=headers)
    assert again.json() == {"requeued": 0}  # nothing is stuck any more
