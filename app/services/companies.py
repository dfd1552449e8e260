"""Portal companies: created by webhooks (and looked up by the API), one row per tenant and portal id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import new_id
from app.db.models import BillingProduct, Company, SyncState, SyncStatus, Tenant
from app.db.repositories.additions import live_additions, newest_base_of
from app.db.repositories.companies import CompanyFilter, company_page, sync_states
from app.db.upsert import insert_ignore, is_postgres
from app.domain.markers import Kind
from app.errors import NotFoundError
from app.schemas.companies import CompanyPageRead, CompanyUpsert
from app.security.principal import Principal
from app.services.audit import record_audit
from app.services.mapping import company_view


async def lock_or_create_company(
    session: AsyncSession, *, tenant_id: str, external_id: str, name: str, now: datetime
) -> Company:
    """The company row, created if new (with its sync state; named by its portal id when no name is known), and
    locked for this transaction on PostgreSQL (SQLite transactions are already serialized), so concurrent changes
    of one company apply one after another. The one place a company is created."""
    statement = select(Company).where(Company.tenant_id == tenant_id, Company.external_id == external_id)
    if is_postgres(session):
        statement = statement.with_for_update()
    statement = statement.execution_options(populate_existing=True)
    company = (await session.scalars(statement)).one_or_none()
    if company is not None:
        return company
    company_id = new_id()
    inserted = await insert_ignore(
        session,
        Company,
        {
            "id": company_id,
            "tenant_id": tenant_id,
            "external_id": external_id,
            "name": name or external_id,
            "license_count": 0,
            "billing_enabled": False,
            "billing_active": False,
            "created_at": now,
            "updated_at": now,
        },
        conflict=("tenant_id", "external_id"),
    )
    if inserted:
        await insert_ignore(
            session,
            SyncState,
            {
                "company_id": company_id,
                "tenant_id": tenant_id,
                "status": SyncStatus.in_sync,
                "generation": 0,
                "attempts": 0,
            },
            conflict=("company_id",),
        )
    # Inserted now, or by a concurrent transaction that committed first: either way it is there to lock.
    return (await session.scalars(statement)).one()


async def save_company(
    session: AsyncSession, principal: Principal, external_id: str, body: CompanyUpsert, *, now: datetime
) -> Company:
    """Create or rename a portal company (webhooks do this too); a change is audited."""
    company = await lock_or_create_company(
        session, tenant_id=principal.tenant_id, external_id=external_id, name=body.name, now=now
    )
    before = {"name": company.name, "identifier": company.identifier}
    company.name, company.identifier = body.name, body.identifier
    if before != {"name": body.name, "identifier": body.identifier}:
        await record_audit(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="company.saved",
            object_type="company",
            object_id=external_id,
            before=before,
            after={"name": body.name, "identifier": body.identifier},
        )
    await session.flush()
    return company


async def companies_page(
    session: AsyncSession, tenant_id: str, where: CompanyFilter, *, limit: int, offset: int
) -> CompanyPageRead:
    """One page of the tenant's companies, each with its mapping, pricing and sync summary."""
    total, companies = await company_page(session, tenant_id, where, limit=limit, offset=offset)
    ids = [c.id for c in companies]
    product = await session.get(BillingProduct, tenant_id)
    tenant = await session.get(Tenant, tenant_id)
    states = await sync_states(session, ids)
    lines = await live_additions(session, ids, kind=Kind.base)
    items = [
        await company_view(
            session,
            c,
            product=product,
            state=states.get(c.id),
            base=newest_base_of([t for t in lines if t.company_id == c.id]),
            tenant=tenant,
            loaded=True,
        )
        for c in companies
    ]
    return CompanyPageRead(total=total, limit=limit, offset=offset, items=items)


async def get_company(session: AsyncSession, *, tenant_id: str, external_id: str) -> Company:
    """A company of this tenant by its portal id; any other tenant's company is simply not found."""
    company = await session.scalar(
        select(Company).where(Company.tenant_id == tenant_id, Company.external_id == external_id)
    )
    if company is None:
        raise NotFoundError(f"No company {external_id!r}")
    return company
