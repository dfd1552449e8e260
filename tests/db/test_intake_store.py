"""The PostgreSQL batch function against the rules in Python: the same batch, applied by each in a transaction of
its own on PostgreSQL, must give the same outcomes and leave the same rows (the service uses the function for
webhooks on PostgreSQL; SQLite and `accept_event` callers use `accept_events` over Core statements)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
from app.db.intake_store import CoreIntakeStore, TenantRow, accept_batch_on_postgres
from app.db.models import Company, SyncState, Tenant
from app.services.tenants import NewTenant
from app.services.webhook_intake import Delivery, Event, accept_event, accept_events, batch_columns
from tests.conftest import TenantFactory

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

# Every row the intake writes, with what is random (new ids, serials) or the wall clock (updated_at, due_at, the
# moment of a deletion) left out; payloads compared as JSON values (Core stores the parsed payload re-serialized,
# the function the text as received).
SNAPSHOT = [
    "SELECT external_id, name, identifier, license_count, last_sequence, deleted_at IS NOT NULL FROM company"
    " ORDER BY external_id",
    "SELECT c.external_id, s.status, s.reason, s.generation, s.attempts, s.due_at IS NOT NULL"
    " FROM sync_state s JOIN company c ON c.id = s.company_id ORDER BY c.external_id",
    "SELECT c.external_id, l.webhook_id, l.sequence, l.license_count, l.previous_count, l.effective_at,"
    " l.received_at, l.ignored_reason FROM license_change l JOIN company c ON c.id = l.company_id"
    " ORDER BY l.id",
    "SELECT webhook_id, event_type, outcome, received_at, payload::jsonb::text FROM webhook_inbox ORDER BY webhook_id",
]

Query = Callable[[str], Awaitable[list[tuple[Any, ...]]]]


def _license(company: str, count: int, sequence: int | None = None, name: str | None = None) -> LicenseCountChanged:
    data = LicenseCountChangedData(
        company_id=company, license_count=count, sequence=sequence, company_name=name, previous_count=max(count - 1, 0)
    )
    return LicenseCountChanged(type="license.count_changed", data=data)


def _upsert(company: str, name: str, identifier: str | None = None) -> CompanyUpserted:
    data = CompanyUpsertedData(company_id=company, name=name, identifier=identifier)
    return CompanyUpserted(type="company.upserted", data=data)


def _deleted(company: str) -> CompanyDeleted:
    return CompanyDeleted(type="company.deleted", data=CompanyDeletedData(company_id=company))


def _deliveries(tenant_id: str, events: list[tuple[str, Event | None]]) -> list[Delivery]:
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


def _batch(tenant_id: str) -> list[Delivery]:
    return _deliveries(
        tenant_id,
        [
            ("w01", _license("mapped", 8, 3)),  # applied, schedules a reconcile
            ("w02", _license("mapped", 9, 4)),  # applied again: two changes counted
            ("w03", _license("mapped", 2, 2)),  # stale sequence
            ("w04", _license("new-1", 5, None, "New One")),  # creates the company
            ("w05", _license("new-1", 6)),  # no sequence: the next one
            ("w06", _license("gone", 4, 9)),  # company deleted: recorded, ignored
            ("w07", _upsert("gone", "Back")),  # restored
            ("w08", _deleted("plain")),
            ("w09", _deleted("nobody")),  # unknown company
            ("w10", None),  # an unknown type
            ("w01", _license("mapped", 99, 50)),  # same id again in the batch: a duplicate
            ("old", _license("plain", 1, 1)),  # recorded by an earlier transaction: a duplicate
            ("w11", _upsert("new-2", "Two")),  # creates the company
            ("w12", _deleted("new-3")),  # not there (yet): unknown company
            ("w13", _license("new-3", 2, None, "Three")),  # creates it, named by the first change that can
        ],
    )


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


async def _with_python_rules(ctx: AppContext, tenant: NewTenant, batch: list[Delivery]) -> tuple[list[str], Any]:
    async with ctx.engine.connect() as conn:
        transaction = await conn.begin()
        try:
            tenants = {tenant.tenant_id: TenantRow(tenant.tenant_id, 1, billing_enabled=True)}
            results = await accept_events(CoreIntakeStore(conn), batch, tenants)
            return [r.outcome for r in results], [[tuple(r) for r in await conn.execute(text(q))] for q in SNAPSHOT]
        finally:
            await transaction.rollback()


async def _with_function(ctx: AppContext, batch: list[Delivery], *, version: int = 1) -> tuple[list[str], Any]:
    raw = await asyncpg.connect(ctx.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    transaction = raw.transaction()
    await transaction.start()
    try:
        columns = batch_columns((d, version, json.dumps(d.payload)) for d in batch)
        outcomes = await accept_batch_on_postgres(raw, columns, now=AT + timedelta(hours=1))
        return outcomes, [[tuple(r) for r in await raw.fetch(q)] for q in SNAPSHOT]
    finally:
        await transaction.rollback()
        await raw.close()


def _needs_postgres(ctx: AppContext) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("the batch function is PostgreSQL's")


@pytest.fixture
async def seeded_tenant(ctx: AppContext, make_tenant: TenantFactory) -> NewTenant:
    _needs_postgres(ctx)
    tenant = await make_tenant("Differential MSP")
    await _seed(ctx, tenant)
    return tenant


async def test_the_function_and_the_python_rules_leave_the_same_rows(ctx: AppContext, seeded_tenant: NewTenant) -> None:
    tenant = seeded_tenant
    batch = _batch(tenant.tenant_id)
    python_outcomes, python_rows = await _with_python_rules(ctx, tenant, batch)
    function_outcomes, function_rows = await _with_function(ctx, batch)
    assert python_outcomes == [
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
        "unknown_company",
        "applied",
    ]
    assert function_outcomes == python_outcomes
    for python_table, function_table in zip(python_rows, function_rows, strict=True):
        assert function_table == python_table
    companies, states = python_rows[0], python_rows[1]
    assert ("mapped", "Mapped", None, 9, 4, False) in companies
    assert ("new-1", "New One", None, 6, 2, False) in companies
    assert ("new-3", "Three", None, 2, 1, False) in companies
    assert ("mapped", "pending", "license_change", 2, 0, True) in states  # two changes, one reconcile due


async def test_the_function_hands_back_deliveries_checked_against_rotated_secrets(
    ctx: AppContext, seeded_tenant: NewTenant
) -> None:
    tenant = seeded_tenant
    stranger = Delivery(tenant_id="no-such-tenant", webhook_id="s1", event=_license("mapped", 3, 5), payload={})
    outcomes, rows = await _with_function(ctx, [*_batch(tenant.tenant_id)[:2], stranger], version=0)
    assert outcomes == ["recheck", "recheck", "unknown_tenant"]
    ledger, inbox = rows[2], rows[3]
    assert [row[1] for row in ledger] == ["old"]  # nothing written: only the seed's delivery is there
    assert [row[0] for row in inbox] == ["old"]


# Random batches over a few companies (mapped, unmapped, deleted, not there yet), with every event type, missing and
# repeated sequences, repeated webhook ids and names: the two implementations must agree on all of it.
_COMPANIES = ["mapped", "mapped", "plain", "gone", "new-a", "new-b"]  # the mapped one (which schedules) twice as often
_license_changes = st.builds(
    _license,
    st.sampled_from(_COMPANIES),
    st.integers(0, 40),
    st.one_of(st.none(), st.integers(0, 8)),
    st.sampled_from([None, "", "Renamed"]),
)
_events = st.one_of(
    _license_changes,
    _license_changes,
    st.builds(_upsert, st.sampled_from(_COMPANIES), st.sampled_from(["Acme", "Beta"]), st.sampled_from([None, "ID"])),
    st.builds(_deleted, st.sampled_from(_COMPANIES)),
    st.none(),
)
# Mostly new webhook ids; sometimes one repeated within the batch, or one an earlier transaction recorded.
_batches = st.lists(st.tuples(st.sampled_from(["new"] * 6 + ["w0", "old"]), _events), max_size=20).map(
    lambda drawn: [(f"n{i}" if key == "new" else key, event) for i, (key, event) in enumerate(drawn)]
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(events=_batches)
async def test_random_batches_give_the_same_outcomes_and_rows(
    ctx: AppContext, seeded_tenant: NewTenant, events: list[tuple[str, Event | None]]
) -> None:
    batch = _deliveries(seeded_tenant.tenant_id, events)
    python_outcomes, python_rows = await _with_python_rules(ctx, seeded_tenant, batch)
    function_outcomes, function_rows = await _with_function(ctx, batch)
    assert function_outcomes == python_outcomes
    assert function_rows == python_rows
