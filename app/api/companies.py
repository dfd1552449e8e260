"""Portal companies, CW look-ups for mapping, suggestions, mapping and "Edit Billing"."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, or_, select

from app.api.deps import CompanyPath, ContextDep, PrincipalDep, SessionDep
from app.api.problems import CW_ERROR_RESPONSES, error_responses
from app.connectwise.conditions import F
from app.db.models import BillingProduct, Company, PriceSetting, SyncState, TrackedAddition
from app.domain.markers import Kind
from app.domain.matching import Candidate, rank
from app.errors import NotAuthenticatedError, NotFoundError
from app.schemas.agreement import AgreementView
from app.schemas.common import present
from app.schemas.companies import (
    BillingUpdate,
    CompanyPageRead,
    CompanyRead,
    CompanyUpsert,
    CWAgreementRead,
    CWCompanyRead,
    MappingUpdate,
    SuggestionRead,
)
from app.services.agreement_view import agreement_view
from app.services.audit import record_audit
from app.services.billing_views import NotReadyError
from app.services.companies import get_company, lock_or_create_company
from app.services.cw_connections import NotConnectedError, tenant_client
from app.services.mapping import (
    MappingConflictError,
    MappingRejectedError,
    company_view,
    map_company,
    settle_billing,
    unmap_company,
)
from app.services.sync_schedule import schedule_if_wanted
from app.services.tenants import get_tenant

router = APIRouter(prefix="/api/v1", tags=["companies"])


@router.get(
    "/companies",
    response_model=CompanyPageRead,
    summary="The portal's managed companies",
    responses=error_responses(NotAuthenticatedError),
)
async def list_companies(
    principal: PrincipalDep,
    session: SessionDep,
    mapped: bool | None = None,
    billing_enabled: bool | None = None,
    search: Annotated[str | None, Query(max_length=100)] = None,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> CompanyPageRead:
    statement = select(Company).where(Company.tenant_id == principal.tenant_id)
    if not include_deleted:
        statement = statement.where(Company.deleted_at.is_(None))
    if mapped is not None:
        statement = statement.where(
            Company.cw_agreement_id.is_not(None) if mapped else Company.cw_agreement_id.is_(None)
        )
    if billing_enabled is not None:
        statement = statement.where(Company.billing_enabled.is_(billing_enabled))
    if search:
        text = search.lower()  # literal text: `%` and `_` are escaped, never wildcards
        statement = statement.where(
            or_(
                func.lower(Company.name).contains(text, autoescape=True),
                func.lower(Company.external_id).contains(text, autoescape=True),
                func.lower(func.coalesce(Company.identifier, "")).contains(text, autoescape=True),
            )
        )
    total = await session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    companies = list(
        await session.scalars(statement.order_by(Company.name, Company.external_id).limit(limit).offset(offset))
    )
    ids = [c.id for c in companies]
    product = await session.get(BillingProduct, principal.tenant_id)
    states = {s.company_id: s for s in await session.scalars(select(SyncState).where(SyncState.company_id.in_(ids)))}
    bases: dict[str, TrackedAddition] = {}
    for base in await session.scalars(
        select(TrackedAddition)
        .where(
            TrackedAddition.company_id.in_(ids),
            TrackedAddition.kind == Kind.base.value,
            TrackedAddition.retired_at.is_(None),
        )
        .order_by(TrackedAddition.marker)
    ):
        bases[base.company_id] = base  # the newest base line of each company wins
    items = [
        await company_view(session, c, product=product, state=states.get(c.id), base=bases.get(c.id), loaded=True)
        for c in companies
    ]
    return CompanyPageRead(total=total, limit=limit, offset=offset, items=items)


@router.get(
    "/companies/{company_id}",
    response_model=CompanyRead,
    summary="One company",
    responses=error_responses(NotAuthenticatedError, NotFoundError),
)
async def read_company(company_id: CompanyPath, principal: PrincipalDep, session: SessionDep) -> CompanyRead:
    return await company_view(
        session, await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    )


@router.put(
    "/companies/{company_id}",
    response_model=CompanyRead,
    summary="Create or rename a portal company (webhooks do this too)",
    responses=error_responses(NotAuthenticatedError),
)
async def put_company(
    company_id: CompanyPath, body: CompanyUpsert, principal: PrincipalDep, session: SessionDep
) -> CompanyRead:
    company = await lock_or_create_company(
        session, tenant_id=principal.tenant_id, external_id=company_id, name=body.name
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
            object_id=company_id,
            before=before,
            after={"name": body.name, "identifier": body.identifier},
        )
    await session.flush()
    return await company_view(session, company)


@router.get(
    "/connectwise/companies",
    response_model=list[CWCompanyRead],
    tags=["connectwise"],
    summary="Search CW companies (name or identifier)",
    responses={**error_responses(NotAuthenticatedError, NotConnectedError), **CW_ERROR_RESPONSES},
)
async def search_cw_companies(
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    search: Annotated[str | None, Query(max_length=100)] = None,
) -> list[CWCompanyRead]:
    client = await tenant_client(ctx, session, principal.tenant_id)
    return [
        CWCompanyRead(id=c.id, identifier=c.identifier, name=c.name, status=c.status.name if c.status else None)
        for c in await client.search_companies(search)
    ]


@router.get(
    "/connectwise/companies/{cw_company_id}/agreements",
    response_model=list[CWAgreementRead],
    tags=["connectwise"],
    summary="A CW company's agreements, with type, status, billing cycle and prorate",
    responses={**error_responses(NotAuthenticatedError, NotConnectedError), **CW_ERROR_RESPONSES},
)
async def list_cw_agreements(
    cw_company_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
) -> list[CWAgreementRead]:
    client = await tenant_client(ctx, session, principal.tenant_id)
    return [
        CWAgreementRead(
            id=a.id,
            name=a.name,
            type=a.type.name if a.type else None,
            status=a.agreement_status,
            cancelled=bool(a.cancelled_flag),
            billing_cycle=a.billing_cycle.name if a.billing_cycle else None,
            bill_start_date=a.bill_start_date,
            end_date=a.end_date,
            prorate=a.prorate_flag,
            company_id=a.company.id if a.company else None,
        )
        for a in await client.list_agreements(cw_company_id)
    ]


@router.get(
    "/companies/{company_id}/suggestions",
    response_model=list[SuggestionRead],
    summary="CW companies that may be this company, with the reason; never applied by themselves",
    responses={**error_responses(NotAuthenticatedError, NotFoundError, NotConnectedError), **CW_ERROR_RESPONSES},
)
async def suggestions(
    company_id: CompanyPath, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> list[SuggestionRead]:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    client = await tenant_client(ctx, session, principal.tenant_id)
    condition = F("name").contains_text(company.name.split()[0] if company.name.split() else company.name)
    if company.identifier:
        condition = condition | (F("identifier") == company.identifier)
    condition = (F("deletedFlag") == False) & condition  # noqa: E712 (a CW condition)
    found = await client.find_companies(condition, limit=200)
    ranked = rank(
        name=company.name,
        identifier=company.identifier,
        candidates=[Candidate(c.id, c.identifier, c.name) for c in found],
    )
    return [
        SuggestionRead(
            cw_company_id=s.candidate.cw_company_id,
            identifier=s.candidate.identifier,
            name=s.candidate.name,
            reason=s.reason.value,
            score=s.score,
            auto_applicable=s.exact,
        )
        for s in ranked
    ]


@router.put(
    "/companies/{company_id}/mapping",
    response_model=CompanyRead,
    summary="Map the company to its CW company and agreement (adopts an existing addition)",
    responses={
        **error_responses(
            NotAuthenticatedError, NotFoundError, NotConnectedError, MappingRejectedError, MappingConflictError
        ),
        **CW_ERROR_RESPONSES,
    },
)
async def put_mapping(
    company_id: CompanyPath, body: MappingUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> CompanyRead:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    if company.deleted_at is not None:
        raise MappingRejectedError(f"Company {company_id} was deleted in the portal")
    client = await tenant_client(ctx, session, principal.tenant_id)
    tenant = await get_tenant(session, principal.tenant_id)
    await map_company(
        session,
        client,
        tenant=tenant,
        company=company,
        cw_company_id=body.cw_company_id,
        cw_agreement_id=body.cw_agreement_id,
        actor=principal.actor,
        now=ctx.now(),
    )
    return await company_view(session, company)


@router.delete(
    "/companies/{company_id}/mapping",
    response_model=CompanyRead,
    summary="Unmap the company: its agreement bills through the end of the current period and nothing after",
    responses=error_responses(NotAuthenticatedError, NotFoundError, MappingConflictError),
)
async def delete_mapping(
    company_id: CompanyPath, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> CompanyRead:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    await unmap_company(session, tenant=tenant, company=company, actor=principal.actor, now=ctx.now())
    return await company_view(session, company)


@router.patch(
    "/companies/{company_id}/billing",
    response_model=CompanyRead,
    summary="Edit Billing: enable billing and override the unit price/cost (null = product default)",
    responses=error_responses(NotAuthenticatedError, NotFoundError),
)
async def patch_billing(
    company_id: CompanyPath, body: BillingUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> CompanyRead:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    before = {
        "enabled": company.billing_enabled,
        "unit_price": company.unit_price_override,
        "unit_cost": company.unit_cost_override,
    }
    if body.enabled is not None:
        company.billing_enabled = body.enabled
    if present(body, "unit_price"):
        company.unit_price_override = body.unit_price
    if present(body, "unit_cost"):
        company.unit_cost_override = body.unit_cost
    after = {
        "enabled": company.billing_enabled,
        "unit_price": company.unit_price_override,
        "unit_cost": company.unit_cost_override,
    }
    if after != before:
        now = ctx.now()
        changed = [k for k in after if after[k] != before[k]]
        await record_audit(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="company.billing_changed",
            object_type="company",
            object_id=company_id,
            before={k: before[k] for k in changed},
            after={k: after[k] for k in changed},
        )
        tenant = await get_tenant(session, principal.tenant_id)
        if {"unit_price", "unit_cost"} & set(changed):  # applies from the next period (DESIGN §5)
            session.add(
                PriceSetting(
                    tenant_id=tenant.id,
                    company_id=company.id,
                    set_at=now,
                    unit_price=company.unit_price_override,
                    unit_cost=company.unit_cost_override,
                    source="company",
                )
            )
        await settle_billing(session, tenant=tenant, company=company, now=now, reason="billing_changed")
        reason = "price_change" if {"unit_price", "unit_cost"} & set(changed) else "billing_enabled"
        await schedule_if_wanted(session, tenant=tenant, company=company, reason=reason, at=now)
    await session.flush()
    return await company_view(session, company)


@router.get(
    "/companies/{company_id}/agreement",
    response_model=AgreementView,
    summary="The company's CW agreement as an MSP would check it (?format=text for plain text)",
    responses={
        200: {"content": {"text/plain": {}}, "description": "The agreement"},
        **error_responses(NotAuthenticatedError, NotFoundError, NotConnectedError, NotReadyError),
        **CW_ERROR_RESPONSES,
    },
)
async def read_agreement(
    company_id: CompanyPath,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    format: Annotated[Literal["json", "text"], Query()] = "json",
) -> AgreementView | Response:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    if company.cw_agreement_id is None:
        raise NotReadyError(f"Company {company_id} is not mapped to an agreement yet")
    view = await agreement_view(await tenant_client(ctx, session, principal.tenant_id), company)
    if format == "text":
        return PlainTextResponse(view.text)
    return view
