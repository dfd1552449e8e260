"""Preview, charges, periods (app/services/billing_views.py); sync state, change sets and reconciliation
(app/services/sync_control.py)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CompanyPath, ContextDep, PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.domain.periods import local_day
from app.errors import NotAuthenticatedError, NotFoundError, UnprocessableError
from app.schemas.sync import (
    BulkApprove,
    BulkApproveResult,
    BulkRetryResult,
    ChargesResponse,
    PeriodsResponse,
    PreviewRequest,
    PreviewResponse,
    ReconciliationRead,
    SyncRequest,
    SyncStatus,
)
from app.services import billing_views, sync_control
from app.services.billing_views import NotReadyError
from app.services.companies import get_company
from app.services.sync_control import (
    BillingOffForTenantError,
    NothingToApproveError,
    NotMappedError,
)
from app.services.tenants import get_tenant

router = APIRouter(prefix="/api/v1", tags=["sync"])


class InvalidRangeError(UnprocessableError):
    code = "invalid_range"
    title = "The date range is not valid"


@router.post(
    "/companies/{company_id}/license-changes/preview",
    response_model=PreviewResponse,
    summary="What a license change would do in CW (changes nothing)",
    responses=error_responses(NotAuthenticatedError, NotFoundError, NotReadyError),
)
async def preview(
    company_id: CompanyPath, body: PreviewRequest, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> PreviewResponse:
    """What a license change would do, without changing anything: the lines the sync would write, the proration amount
    and the invoice it lands on, or why nothing would be billed (billing off, not mapped). A backdated change shows
    the catch-up it becomes; a future-dated one the day it applies."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    return await billing_views.preview(
        session,
        tenant=tenant,
        company=company,
        license_count=body.license_count,
        effective_at=body.effective_at,
        now=ctx.now(),  # the billing clock, as the worker's: "today" decides the period the change lands in
    )


@router.get(
    "/companies/{company_id}/charges",
    response_model=ChargesResponse,
    summary="The license history and what the billing period containing a date owes",
    responses=error_responses(NotAuthenticatedError, NotFoundError, NotReadyError),
)
async def charges(
    company_id: CompanyPath,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    period: Annotated[
        date | None, Query(description="Any date in the billing period, YYYY-MM-DD (default: today)")
    ] = None,
) -> ChargesResponse:
    """The license history behind one billing period (every change at its effective day, with conflicts and disagreeing
    `previous_count`s flagged) and what the period owes, computed as DESIGN §5 says."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    now = ctx.now()
    day = period or local_day(now, tenant.timezone)
    return await billing_views.charges(session, tenant=tenant, company=company, day=day, now=now)


@router.get(
    "/companies/{company_id}/periods",
    response_model=PeriodsResponse,
    summary="Per billing period: B, price, what it owes, the CW lines that bill it, what CW invoiced, its state",
    responses=error_responses(NotAuthenticatedError, NotFoundError, NotReadyError, InvalidRangeError),
)
async def periods(
    company_id: CompanyPath,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    from_: Annotated[date | None, Query(alias="from", description="First day (default: 3 months back)")] = None,
    to: Annotated[date | None, Query(description="Last day (default: today)")] = None,
) -> PeriodsResponse:
    """Every billing period in a date range: the count billed in advance, the price, what the period owes, the CW lines
    that bill it (base, proration, catch-ups, with addition ids), what CW invoiced for it when invoices can be read,
    and its state."""
    if from_ is not None and to is not None and (to < from_ or (to - from_).days > 3 * 366):
        raise InvalidRangeError("`to` must be on or after `from`, at most three years later")
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    return await billing_views.periods(
        session, ctx, tenant=tenant, company=company, first=from_, last=to, now=ctx.now()
    )


@router.get(
    "/companies/{company_id}/sync",
    response_model=SyncStatus,
    summary="Sync state: in sync, pending, retrying, failed, drift or awaiting approval, and what CW holds",
    responses=error_responses(NotAuthenticatedError, NotFoundError),
)
async def sync_status(company_id: CompanyPath, principal: PrincipalDep, session: SessionDep) -> SyncStatus:
    """Where the company's sync stands, in one vocabulary (`status`), with why (`cause`) and what to do (`action`); the
    last error, held drift, a change set waiting for approval, and what CW held at the last reconcile."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    return await sync_control.sync_status(session, company)


@router.post(
    "/companies/{company_id}/sync",
    response_model=SyncStatus,
    status_code=202,
    summary="Reconcile now; in review mode approve or dismiss the pending change set",
    responses=error_responses(
        NotAuthenticatedError,
        NotFoundError,
        NotReadyError,
        NothingToApproveError,
        NotMappedError,
        BillingOffForTenantError,
    ),
)
async def request_sync(
    company_id: CompanyPath,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    body: SyncRequest | None = None,
) -> SyncStatus:
    """Reconcile now; or, in review mode, approve (`approve`) or dismiss (`dismiss`) the waiting change set; or
    overwrite held drift once (`overwrite_drift`). A company that cannot sync is 409 with its status as the `code`
    (`not_mapped`, `billing_disabled`, `billing_off_for_tenant`)."""
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    return await sync_control.request_sync(session, principal, company, body or SyncRequest(), now=ctx.now())


@router.get(
    "/reconciliation",
    response_model=ReconciliationRead,
    summary="Every mapped company: portal count vs CW quantity, price/cost vs CW, drift, discrepancies and why",
    responses=error_responses(NotAuthenticatedError),
)
async def reconciliation(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ReconciliationRead:
    """Every company ever mapped, a page at a time: the portal's count and the expected price and cost against what CW
    holds, the sync status, every reason they are not in step, and the number of periods whose lines do not add up."""
    return await sync_control.reconciliation(session, principal.tenant_id, limit=limit, offset=offset)


@router.post(
    "/reconciliation/approve",
    response_model=BulkApproveResult,
    summary="Review mode: approve pending change sets in bulk",
    responses=error_responses(NotAuthenticatedError),
)
async def approve_all(
    body: BulkApprove, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> BulkApproveResult:
    """Review mode: approve every waiting change set, or those of the given portal companies; the companies approved."""
    approved = await sync_control.approve_all(session, principal, body.company_ids, now=ctx.now())
    return BulkApproveResult(approved=approved)


@router.post(
    "/reconciliation/retry",
    response_model=BulkRetryResult,
    summary="Queue again every company whose sync failed or keeps retrying (after fixing the cause)",
    responses=error_responses(NotAuthenticatedError),
)
async def retry_all(principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> BulkRetryResult:
    """Queue again every company whose sync failed or keeps retrying, after fixing the cause (a passing connection test
    does this by itself)."""
    return BulkRetryResult(requeued=await sync_control.retry_stuck(session, principal.tenant_id, now=ctx.now()))
