"""Portal companies and their sync states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Company, SyncState


@dataclass(frozen=True, slots=True)
class CompanyFilter:
    mapped: bool | None = None  # to an agreement now
    ever_mapped: bool = False  # mapped at some point (its lines may still need ending)
    billing_enabled: bool | None = None
    search: str | None = None  # literal text in name, portal id or identifier
    include_deleted: bool = True


def _filtered(tenant_id: str, where: CompanyFilter) -> Select[Company]:
    statement = select(Company).where(Company.tenant_id == tenant_id)
    if not where.include_deleted:
        statement = statement.where(Company.deleted_at.is_(None))
    if where.ever_mapped:
        statement = statement.where(Company.mapped_at.is_not(None))
    if where.mapped is not None:
        agreement = Company.cw_agreement_id
        statement = statement.where(agreement.is_not(None) if where.mapped else agreement.is_(None))
    if where.billing_enabled is not None:
        statement = statement.where(Company.billing_enabled.is_(where.billing_enabled))
    if where.search:
        text = where.search.lower()  # literal text: `%` and `_` are escaped, never wildcards
        statement = statement.where(
            or_(
                func.lower(Company.name).contains(text, autoescape=True),
                func.lower(Company.external_id).contains(text, autoescape=True),
                func.lower(func.coalesce(Company.identifier, "")).contains(text, autoescape=True),
            )
        )
    return statement


async def company_page(
    session: AsyncSession, tenant_id: str, where: CompanyFilter, *, limit: int, offset: int
) -> tuple[int, list[Company]]:
    """(how many match, one page of them by name)."""
    statement = _filtered(tenant_id, where)
    total = await session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    page = statement.order_by(Company.name, Company.external_id).limit(limit).offset(offset)
    return total, list(await session.scalars(page))


async def sync_states(session: AsyncSession, company_ids: Sequence[str]) -> dict[str, SyncState]:
    if not company_ids:
        return {}
    rows = await session.scalars(select(SyncState).where(SyncState.company_id.in_(company_ids)))
    return {s.company_id: s for s in rows}


async def discrepancy_total(session: AsyncSession, tenant_id: str) -> int:
    """Periods of the tenant whose lines do not add up to what they owe (as the last reconciles found)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(SyncState.discrepancies), 0)).where(SyncState.tenant_id == tenant_id)
    )
    return int(total or 0)


async def awaiting_approval(
    session: AsyncSession, tenant_id: str, external_ids: Sequence[str] | None
) -> list[tuple[Company, SyncState]]:
    """Companies with a change set waiting for approval (of these portal ids, when given)."""
    statement = (
        select(Company, SyncState)
        .join(SyncState, SyncState.company_id == Company.id)
        .where(Company.tenant_id == tenant_id, SyncState.pending_plan.is_not(None))
    )
    if external_ids is not None:
        statement = statement.where(Company.external_id.in_(external_ids))
    return [(company, state) for company, state in (await session.execute(statement)).all()]
