"""Portal companies, CW look-ups for mapping, suggestions, mapping and "Edit Billing"."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import PlainTextResponse

from app.api.deps import CompanyPath, ContextDep, PrincipalDep, SessionDep
from app.api.problems import CW_ERROR_RESPONSES, error_responses
from app.db.repositories.companies import CompanyFilter
from app.errors import NotAuthenticatedError, NotFoundError
from app.schemas.agreement import AgreementView
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
from app.services.billing_views import NotReadyError
from app.services.companies import companies_page, get_company, save_company
from app.services.cw_connections import NotConnectedError, tenant_client
from app.services.mapping import (
    AgreementSharedError,
    MappingConflictError,
    MappingRejectedError,
    company_view,
    edit_billing,
    map_company,
    suggest_matches,
    unmap_company,
)
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
    """The portal's companies (created by `company.upserted` webhooks or PUT), a page at a time, each with its mapping,
    effective price and cost, and sync status. Filter by mapping, billing or text (name, portal id or identifier;
    `%` and `_` are literal)."""
    where = CompanyFilter(
        mapped=mapped, billing_enabled=billing_enabled, search=search, include_deleted=include_deleted
    )
    return await companies_page(session, principal.tenant_id, where, limit=limit, offset=offset)


@router.get(
    "/companies/{company_id}",
    response_model=CompanyRead,
    summary="One company",
    responses=error_responses(NotAuthenticatedError, NotFoundError),
)
async def read_company(company_id: CompanyPath, principal: PrincipalDep, session: SessionDep) -> CompanyRead:
    """One company: its mapping, effective price and cost (and where they come from), and its sync status with the
    cause and what to do."""
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
    company_id: CompanyPath, body: CompanyUpsert, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> CompanyRead:
    """Create a portal company or rename it; webhooks normally do this. The change is audited."""
    company = await save_company(session, principal, company_id, body, now=ctx.now())
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
    """Search ConnectWise companies by name or identifier (for mapping a portal company)."""
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
    """A ConnectWise company's agreements with type, status, billing cycle, bill start date and prorate switch (for
    mapping)."""
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
    """ConnectWise companies that may be this portal company, best first, each with the reason (same identifier, same
    name, similar name). Suggestions are never applied by themselves."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    client = await tenant_client(ctx, session, principal.tenant_id)
    return await suggest_matches(client, company)


@router.put(
    "/companies/{company_id}/mapping",
    response_model=CompanyRead,
    summary="Map the company to its CW company and agreement (adopts an existing addition)",
    responses={
        **error_responses(
            NotAuthenticatedError,
            NotFoundError,
            NotConnectedError,
            MappingRejectedError,
            MappingConflictError,
            AgreementSharedError,
        ),
        **CW_ERROR_RESPONSES,
    },
)
async def put_mapping(
    company_id: CompanyPath, body: MappingUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> CompanyRead:
    """Map the company to its ConnectWise company and agreement. A first mapping bills from today's period and adopts a
    live addition of the product already on the agreement; a move bills the old agreement through the current period
    and the new one from the next. An agreement another portal company is mapped to is 409 `agreement_shared` unless
    `share_agreement` is true."""
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
        share_agreement=body.share_agreement,
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
    """Unmap the company: its agreement bills through the end of the current period and nothing after (the next
    period's line is ended). 409 when it is not mapped."""
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
    """ "Edit Billing": enable or disable billing for the company and override its unit price and cost (`null` goes back
    to the product default; a field left out stays). A new price applies from the next period; disabling leaves the
    current period billed."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    await edit_billing(session, tenant=tenant, company=company, body=body, actor=principal.actor, now=ctx.now())
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
    """The company's ConnectWise agreement as an MSP checks it: every addition with quantity, prices, dates and the
    invoice text of each line this service wrote (`?format=text` for a plain-text table). Lines of other products or
    of another company are marked `other`."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    if company.cw_agreement_id is None:
        raise NotReadyError(f"Company {company_id} is not mapped to an agreement yet")
    view = await agreement_view(await tenant_client(ctx, session, principal.tenant_id), company)
    if format == "text":
        return PlainTextResponse(view.text)
    return view
