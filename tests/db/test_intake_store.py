"""The asyncpg intake store against the Core one: the same batch, applied by each in a transaction of its own on
PostgreSQL, must leave the same rows (the service uses asyncpg for webhooks, `accept_event` callers use Core)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text, update

from app.api.schemas.webhooks import (
    CompanyDeleted,
    CompanyDeletedData,
    CompanyUpserted,
    CompanyUpsertedData,
    LicenseCountChanged,
    LicenseCountChangedData,
)
from app.context import AppContext
from app.db.intake_store import AsyncpgIntakeStore, CoreIntakeStore, IntakeStore, TenantRow
from app.db.models import Company, SyncState, Tenant
from app.services.tenants import NewTenant
from app.services.webhook_intake import Delivery, IntakeResult, accept_event, accept_events
from tests.conftest import TenantFactory

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

# Every row the intake writes, with what is random (new ids, serials) or the wall clock (updated_at, due_at) left out.
SNAPSHOT = [
    "SELECT external_id, name, identifier, license_count, last_sequence, deleted_at IS NOT NULL FROM company"
    " ORDER BY external_id",
    "SELECT c.external_id, s.status, s.reason, s.generation, s.attempts, s.due_at IS NOT NULL"
    " FROM sync_state s JOIN company c ON c.id = s.company_id ORDER BY c.external_id",
    "SELECT c.external_id, l.webhook_id, l.sequence, l.license_count, l.previous_count, l.effective_at,"
    " l.received_at, l.ignored_reason FROM license_change l JOIN company c ON c.id = l.company_id"
    " ORDER BY l.id",
    "SELECT webhook_id, event_type, outcome, received_at, payload::text FROM webhook_inbox ORDER BY webhook_id",
]


def _license(company: str, count: int, sequence: int | None = None, name: str | None = None) -> LicenseCountChanged:
    data = LicenseCountChangedData(
        company_id=company, license_count=count, sequence=sequence, company_name=name, previous_count=count - 1
    )
    return LicenseCountChanged(type="license.count_changed", data=data)


def _batch(tenant_id: str) -> list[Delivery]:
    events: list[tuple[str, Any]] = [
        ("w01", _license("mapped", 8, 3)),  # applied, schedules a reconcile
        ("w02", _license("mapped", 9, 4)),  # applied again: two changes counted
        ("w03", _license("mapped", 2, 2)),  # stale sequence
        ("w04", _license("new-1", 5, None, "New One")),  # creates the company
        ("w05", _license("new-1", 6)),  # no sequence: the next one
        ("w06", _license("gone", 4, 9)),  # company deleted: recorded, ignored
        ("w07", CompanyUpserted(type="company.upserted", data=CompanyUpsertedData(company_id="gone", name="Back"))),
        ("w08", CompanyDeleted(type="company.deleted", data=CompanyDeletedData(company_id="plain"))),
        ("w09", CompanyDeleted(type="company.deleted", data=CompanyDeletedData(company_id="nobody"))),
        ("w10", None),  # an unknown type
        ("w01", _license("mapped", 99, 50)),  # same id again in the batch: a duplicate
        ("old", _license("plain", 1, 1)),  # recorded by an earlier transaction: a duplicate
        ("w11", CompanyUpserted(type="company.upserted", data=CompanyUpsertedData(company_id="new-2", name="Two"))),
    ]
    return [
        Delivery(
            tenant_id=tenant_id,
            webhook_id=webhook_id,
            event=event,
            payload=event.model_dump(mode="json") if event is not None else {"type": "vendor.something_new"},
            received_at=AT,
        )
        for webhook_id, event in events
    ]


async def _seed(ctx: AppContext, tenant: NewTenant) -> None:
    async with ctx.sessionmaker() as s, s.begin():
        tenant_row = await s.get(Tenant, tenant.tenant_id)
        assert tenant_row is not None
        tenant_row.billing_enabled = True
        for external_id, mapped in (("mapped", True), ("gone", False), ("plain", False)):
            company = Company(
                tenant_id=tenant.tenant_id,
                external_id=external_id,
                name=external_id.title(),
                license_count=1,
                last_sequence=1,
                billing_enabled=mapped,
                cw_company_id=7 if mapped else None,
                cw_agreement_id=70 if mapped else None,
            )
            s.add(company)
            await s.flush()
            s.add(SyncState(company_id=company.id, tenant_id=tenant.tenant_id, status="in_sync", generation=0))
        await s.execute(update(Company).where(Company.external_id == "gone").values(deleted_at=AT))
        await accept_event(s, tenant=tenant_row, webhook_id="old", event=_license("plain", 1, 1), payload={"type": "x"})


async def _with_core(ctx: AppContext, work: Any) -> Any:
    async with ctx.engine.connect() as conn:
        transaction = await conn.begin()
        try:

            async def query(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in await conn.execute(text(sql))]

            return await work(CoreIntakeStore(conn), query)
        finally:
            await transaction.rollback()


async def _with_asyncpg(ctx: AppContext, work: Any) -> Any:
    raw = await asyncpg.connect(ctx.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    transaction = raw.transaction()
    await transaction.start()
    try:

        async def query(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in await raw.fetch(sql)]

        return await work(AsyncpgIntakeStore(raw), query)
    finally:
        await transaction.rollback()
        await raw.close()


async def test_both_stores_leave_the_same_rows(ctx: AppContext, make_tenant: TenantFactory) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("the asyncpg store is PostgreSQL's")
    tenant = await make_tenant("Differential MSP")
    await _seed(ctx, tenant)
    batch = _batch(tenant.tenant_id)
    tenants = {tenant.tenant_id: TenantRow(tenant.tenant_id, 1, billing_enabled=True)}

    async def work(store: IntakeStore, query: Any) -> tuple[list[IntakeResult], list[list[tuple[Any, ...]]]]:
        results = await accept_events(store, batch, tenants)
        return results, [await query(sql) for sql in SNAPSHOT]

    core_results, core_rows = await _with_core(ctx, work)
    pg_results, pg_rows = await _with_asyncpg(ctx, work)
    assert [r.outcome for r in core_results] == [
        "applied",
        "applied",
        "stale_sequence",
        "applied",
        "applied",
        "company_deleted",
        "restored",
        "applied",
        "unknown_company",
        "unknown_type",
        "duplicate",
        "duplicate",
        "applied",
    ]
    assert pg_results == core_results
    for core_table, pg_table in zip(core_rows, pg_rows, strict=True):
        assert pg_table == core_table
    companies, states = core_rows[0], core_rows[1]
    assert ("mapped", "Mapped", None, 9, 4, False) in companies
    assert ("new-1", "New One", None, 6, 2, False) in companies
    assert ("mapped", "pending", "license_change", 2, 0, True) in states  # two changes, one reconcile due
