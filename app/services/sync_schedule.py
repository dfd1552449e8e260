"""Asking for a reconcile: written in the same transaction as the change that needs it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Company, SyncState, Tenant
from app.db.upsert import is_postgres


def sync_eligible(tenant: Tenant, company: Company) -> bool:
    """Whether a change of this company should reach CW now (otherwise it waits in the ledger)."""
    return (
        tenant.billing_enabled
        and company.billing_enabled
        and company.deleted_at is None
        and company.cw_agreement_id is not None
    )


async def schedule_sync(
    session: AsyncSession, *, tenant_id: str, company_id: str, reason: str, at: datetime | None = None
) -> SyncState:
    """Mark the company due. Repeated calls before the worker runs coalesce into one reconcile."""
    state = await session.get(SyncState, company_id, with_for_update=is_postgres(session))
    due = at or utcnow()
    if state is None:
        state = SyncState(
            company_id=company_id, tenant_id=tenant_id, status="pending", generation=1, due_at=due, reason=reason
        )
        session.add(state)
        return state
    state.generation += 1
    state.reason = reason
    if state.due_at is None or state.due_at > due:
        state.due_at = due
    if state.status in ("in_sync", "failed"):
        state.status = "pending"
        state.attempts = 0
    return state


async def schedule_eligible(
    session: AsyncSession, *, tenant_id: str, reason: str, only_default_priced: bool = False
) -> int:
    """Schedule every company that can sync now (the SQL form of `sync_eligible`)."""
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None or not tenant.billing_enabled:
        return 0
    statement = select(Company.id).where(
        Company.tenant_id == tenant_id,
        Company.billing_enabled.is_(True),
        Company.deleted_at.is_(None),
        Company.cw_agreement_id.is_not(None),
    )
    if only_default_priced:
        statement = statement.where((Company.unit_price_override.is_(None)) | (Company.unit_cost_override.is_(None)))
    ids = list(await session.scalars(statement))
    for company_id in ids:
        await schedule_sync(session, tenant_id=tenant_id, company_id=company_id, reason=reason)
    return len(ids)
