"""Asking for a reconcile: written in the same transaction as the change that needs it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Company, SyncState, Tenant
from app.db.upsert import is_postgres


class BillingSwitch(Protocol):
    """A tenant as far as scheduling cares: whether its billing is on at all."""

    @property
    def id(self) -> str: ...

    @property
    def billing_enabled(self) -> bool: ...


class Schedulable(Protocol):
    billing_enabled: bool
    deleted_at: datetime | None
    cw_agreement_id: int | None


def sync_eligible(tenant: BillingSwitch, company: Schedulable) -> bool:
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
    if state is None:
        state = new_sync_state(company_id=company_id, tenant_id=tenant_id)
        session.add(state)
    mark_due(state, reason=reason, due=at or utcnow())
    return state


def new_sync_state(*, company_id: str, tenant_id: str) -> SyncState:
    return SyncState(company_id=company_id, tenant_id=tenant_id, status="in_sync", generation=0, attempts=0)


def mark_due(state: SyncState, *, reason: str, due: datetime, changes: int = 1) -> None:
    """Count `changes` more reasons to reconcile and make the company due by `due` at the latest.

    `app/db/intake_store.py` applies the same rule in SQL to many companies at once.
    """
    state.generation += changes
    state.reason = reason
    if state.due_at is None or state.due_at > due:
        state.due_at = due
    if state.status in ("in_sync", "failed"):
        state.status = "pending"
        state.attempts = 0


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
