"""Marking a company due: one statement holds the rule, for one company (`schedule_sync`) or many (the applier)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.context import AppContext
from app.db.models import Company, SyncState, SyncStatus
from app.services.sync_schedule import Due, mark_many_due, schedule_sync
from app.services.tenants import NewTenant
from tests.conftest import TenantFactory

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SETTLED = {SyncStatus.in_sync, SyncStatus.failed, SyncStatus.needs_attention, SyncStatus.paused}


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> NewTenant:
    return await make_tenant("Schedule MSP")


async def _company(ctx: AppContext, tenant: NewTenant, external_id: str = "c-1") -> str:
    async with ctx.sessionmaker() as s, s.begin():
        company = Company(tenant_id=tenant.tenant_id, external_id=external_id, name="C", license_count=1)
        s.add(company)
    return company.id


@pytest.mark.parametrize("status", list(SyncStatus))
@pytest.mark.parametrize("due", ["none", "earlier", "later"])
async def test_a_new_reason_counts_keeps_the_earliest_due_time_and_wakes_settled_companies(
    ctx: AppContext, tenant: NewTenant, status: SyncStatus, due: str
) -> None:
    earlier, later = NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    company_id = await _company(ctx, tenant)
    async with ctx.sessionmaker() as s, s.begin():
        s.add(SyncState(company_id=company_id, tenant_id=tenant.tenant_id, status=status, generation=4, attempts=3))
        await s.flush()
        await s.execute(update(SyncState).values(due_at={"none": None, "earlier": earlier, "later": later}[due]))
    async with ctx.sessionmaker() as s, s.begin():
        await mark_many_due(
            s, [Due(company_id=company_id, tenant_id=tenant.tenant_id, due_at=NOW, changes=2)], reason="license_change"
        )
    async with ctx.sessionmaker() as s:
        got = await s.get(SyncState, company_id)
        assert got is not None
        assert got.generation == 6  # two more reasons
        assert got.reason == "license_change"
        assert got.due_at == (earlier if due == "earlier" else NOW)  # never later than it already was
        if status in SETTLED:
            assert (got.status, got.attempts) == (SyncStatus.pending, 0)
        else:  # retrying, waiting for approval, held drift …: the state stays, attempts keep counting
            assert (got.status, got.attempts) == (status, 3)


async def test_schedule_sync_creates_a_missing_sync_state_and_returns_it_as_stored(
    ctx: AppContext, tenant: NewTenant
) -> None:
    company_id = await _company(ctx, tenant)
    async with ctx.sessionmaker() as s, s.begin():
        state = await schedule_sync(s, tenant_id=tenant.tenant_id, company_id=company_id, reason="manual", at=NOW)
        assert (state.status, state.generation, state.attempts, state.due_at) == (SyncStatus.pending, 1, 0, NOW)
        again = await schedule_sync(s, tenant_id=tenant.tenant_id, company_id=company_id, reason="manual", at=NOW)
        assert again is state  # the session's object shows what the statement did
        assert state.generation == 2
