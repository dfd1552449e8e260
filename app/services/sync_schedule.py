"""When a company needs a reconcile, and whether billing applies to it: the one home of both rules.

* **Billing applies** to a company that is enabled, mapped and not deleted. Every flip is recorded, with its time, in
  the company's status timeline (`billing_status_change`): a period is billed from the day billing started and in
  full for a period in which it stopped (DESIGN §5).
* **A reconcile is wanted** for a company the tenant bills (its master switch) and that was ever mapped: one whose
  billing stopped still needs its lines ended and its last period billed.
* **Marking due** counts one more reason to reconcile and makes the company due by a moment at the latest; any number
  of reasons before the worker gets to it coalesce into one reconcile. One statement (`mark_due_statement`) holds the
  rule, for one company or many, creating a missing sync state on the way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Insert, case, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import table_of
from app.db.models import BillingStatusChange, Company, SyncState, SyncStatus, Tenant
from app.db.upsert import upsert_insert

_SYNC_STATE = table_of(SyncState)
# States a new reason to reconcile turns back into `pending` (with its attempts counted from zero).
_SETTLED = (SyncStatus.in_sync, SyncStatus.failed, SyncStatus.needs_attention, SyncStatus.paused)


class Billable(Protocol):
    billing_enabled: bool
    deleted_at: datetime | None
    cw_agreement_id: int | None


def billing_applies(company: Billable) -> bool:
    """Enabled, mapped and not deleted."""
    return company.billing_enabled and company.cw_agreement_id is not None and company.deleted_at is None


class Reconcilable(Protocol):
    mapped_at: datetime | None


class TenantSwitch(Protocol):
    @property
    def billing_enabled(self) -> bool: ...


def reconcile_wanted(tenant: TenantSwitch, company: Reconcilable) -> bool:
    """The tenant bills, and the company was mapped at some point (its lines may need writing or ending)."""
    return tenant.billing_enabled and company.mapped_at is not None


def record_status(session: AsyncSession, company: Company, *, at: datetime, reason: str) -> bool:
    """Record a flip of `billing_applies` in the company's status timeline; True if it flipped."""
    active = billing_applies(company)
    if active == company.billing_active:
        return False
    company.billing_active = active
    session.add(
        BillingStatusChange(
            tenant_id=company.tenant_id, company_id=company.id, changed_at=at, active=active, reason=reason
        )
    )
    return True


async def schedule_sync(
    session: AsyncSession, *, tenant_id: str, company_id: str, reason: str, at: datetime
) -> SyncState:
    """Mark the company due (creating its sync state if it has none); its sync state as it now is."""
    await session.flush()  # the statement below must see (and not be overwritten by) pending ORM changes
    await mark_many_due(session, [Due(company_id=company_id, tenant_id=tenant_id, due_at=at)], reason=reason)
    return (
        await session.scalars(
            select(SyncState).where(SyncState.company_id == company_id).execution_options(populate_existing=True)
        )
    ).one()


async def schedule_if_wanted(
    session: AsyncSession, *, tenant: Tenant, company: Company, reason: str, at: datetime
) -> SyncState | None:
    """Mark the company due if a reconcile is wanted for it (see `reconcile_wanted`)."""
    if not reconcile_wanted(tenant, company):
        return None
    return await schedule_sync(session, tenant_id=tenant.id, company_id=company.id, reason=reason, at=at)


async def schedule_tenant(
    session: AsyncSession, *, tenant_id: str, reason: str, at: datetime, only_default_priced: bool = False
) -> int:
    """Mark every company of the tenant that wants a reconcile due (`reconcile_wanted`)."""
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        return 0
    statement = select(Company.id, Company.mapped_at).where(Company.tenant_id == tenant_id)
    if only_default_priced:
        statement = statement.where((Company.unit_price_override.is_(None)) | (Company.unit_cost_override.is_(None)))
    ids = [row.id for row in await session.execute(statement) if reconcile_wanted(tenant, row)]
    await mark_many_due(session, [Due(company_id=i, tenant_id=tenant_id, due_at=at) for i in ids], reason=reason)
    return len(ids)


async def requeue_stuck(session: AsyncSession, *, tenant_id: str, reason: str, at: datetime) -> int:
    """Queue again, at once, every company of the tenant whose sync failed (parked) or is retrying: after the
    cause was fixed (the connection test passed, or the MSP asks for a bulk retry). How many."""
    ids = list(
        await session.scalars(
            select(SyncState.company_id).where(
                SyncState.tenant_id == tenant_id,
                (SyncState.status == SyncStatus.failed) | (SyncState.status == SyncStatus.retrying),
            )
        )
    )
    await mark_many_due(session, [Due(company_id=i, tenant_id=tenant_id, due_at=at) for i in ids], reason=reason)
    return len(ids)


@dataclass(frozen=True, slots=True)
class Due:
    company_id: str
    tenant_id: str
    due_at: datetime
    changes: int = 1


@functools.cache
def mark_due_statement(dialect: str) -> Insert:
    """Count `generation` more reasons to reconcile and make the company due by `due_at` at the latest; a settled
    company (in sync, failed, needs attention, paused) turns `pending` with its attempts from zero. An executemany
    over companies; a missing sync state is created. Parameters per company: `company_id`, `tenant_id`, `reason`,
    `due_at`, `generation`."""
    statement = upsert_insert(dialect)(_SYNC_STATE).values(status=SyncStatus.pending.value, attempts=0)
    current, new = _SYNC_STATE.c, statement.excluded
    settled = current.status == _SETTLED[0].value  # no IN: executemany can't expand it
    for status in _SETTLED[1:]:
        settled = settled | (current.status == status.value)
    return statement.on_conflict_do_update(
        index_elements=[current.company_id],
        set_={
            "generation": current.generation + new.generation,
            "reason": new.reason,
            "due_at": case(
                (current.due_at.is_(None) | (current.due_at > new.due_at), new.due_at), else_=current.due_at
            ),
            "status": case((settled, SyncStatus.pending.value), else_=current.status),
            "attempts": case((settled, 0), else_=current.attempts),
        },
    )


async def mark_many_due(session: AsyncSession, due: Sequence[Due], *, reason: str) -> None:
    if not due:
        return
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    await session.execute(
        mark_due_statement(dialect),
        [
            {
                "company_id": d.company_id,
                "tenant_id": d.tenant_id,
                "reason": reason,
                "due_at": d.due_at,
                "generation": d.changes,
            }
            for d in sorted(due, key=lambda d: d.company_id)  # one order for every writer: no deadlocks
        ],
    )
