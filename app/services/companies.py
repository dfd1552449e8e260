"""Portal companies: created by webhooks (and looked up by the API), one row per tenant and portal id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import new_id, utcnow
from app.db.models import Company, SyncState
from app.db.upsert import insert_ignore, is_postgres
from app.errors import NotFoundError


async def lock_or_create_company(session: AsyncSession, *, tenant_id: str, external_id: str, name: str) -> Company:
    """The company row, created if new, and locked for this transaction on PostgreSQL (SQLite transactions are
    already serialized), so concurrent events of one company apply one after another."""
    statement = select(Company).where(Company.tenant_id == tenant_id, Company.external_id == external_id)
    if is_postgres(session):
        statement = statement.with_for_update()
    statement = statement.execution_options(populate_existing=True)
    company = (await session.scalars(statement)).one_or_none()
    if company is not None:
        return company
    now = utcnow()
    company_id = new_id()
    inserted = await insert_ignore(
        session,
        Company,
        {
            "id": company_id,
            "tenant_id": tenant_id,
            "external_id": external_id,
            "name": name,
            "license_count": 0,
            "billing_enabled": False,
            "created_at": now,
            "updated_at": now,
        },
        conflict=("tenant_id", "external_id"),
    )
    if inserted:
        await insert_ignore(
            session,
            SyncState,
            {"company_id": company_id, "tenant_id": tenant_id, "status": "in_sync", "generation": 0, "attempts": 0},
            conflict=("company_id",),
        )
    # Inserted now, or by a concurrent transaction that committed first: either way it is there to lock.
    return (await session.scalars(statement)).one()


async def get_company(session: AsyncSession, *, tenant_id: str, external_id: str) -> Company:
    """A company of this tenant by its portal id; any other tenant's company is simply not found."""
    company = await session.scalar(
        select(Company).where(Company.tenant_id == tenant_id, Company.external_id == external_id)
    )
    if company is None:
        raise NotFoundError(f"No company {external_id!r}")
    return company
