"""Preview, charges, periods, sync state, change sets and reconciliation."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from app.api.deps import CompanyPath, ContextDep, PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.db.models import BillingProduct, Company, SyncState, TrackedAddition
from app.domain.markers import Kind
from app.domain.periods import local_day
from app.errors import ConflictError, NotAuthenticatedError, NotFoundError, UnprocessableError
from app.schemas.common import money_str
from app.schemas.sync import (
    BulkApprove,
    BulkApproveResult,
    ChargesResponse,
    PeriodsResponse,
    PreviewRequest,
    PreviewResponse,
    ReconciliationRead,
    ReconciliationRow,
    SyncRequest,
    SyncStatus,
)
from app.services import billing_views
from app.services.audit import record_audit
from app.services.billing_views import NotReadyError
from app.services.companies import get_company
from app.services.mapping import effective_price
from app.services.sync_schedule import schedule_sync
from app.services.tenants import get_tenant

router = APIRouter(prefix="/api/v1", tags=["sync"])


class NothingToApproveError(ConflictError):
    code = "nothing_to_approve"
    title = "There is no pending change set"


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
    if from_ is not None and to is not None and (to < from_ or (to - from_).days > 3 * 366):
        raise InvalidRangeError("`to` must be on or after `from`, at most three years later")
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    return await billing_views.periods(
        session, ctx, tenant=tenant, company=company, first=from_, last=to, now=ctx.now()
    )


def _status(company: Company, state: SyncState | None) -> SyncStatus:
    return SyncStatus(
        company_id=company.external_id,
        status=state.status if state else "in_sync",
        reason=state.reason if state else None,
        due=bool(state and state.due_at is not None),
        attempts=state.attempts if state else 0,
        last_error=state.last_error if state else None,
        last_attempt_at=state.last_attempt_at if state else None,
        last_success_at=state.last_success_at if state else None,
        drift=state.drift if state else None,
        pending_change_set=state.pending_plan if state else None,
        cw_additions=state.cw_snapshot if state else None,
    )


@router.get(
    "/companies/{company_id}/sync",
    response_model=SyncStatus,
    summary="Sync state: in sync, pending, retrying, failed, drift or awaiting approval, and what CW holds",
    responses=error_responses(NotAuthenticatedError, NotFoundError),
)
async def sync_status(company_id: CompanyPath, principal: PrincipalDep, session: SessionDep) -> SyncStatus:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    return _status(company, await session.get(SyncState, company.id))


async def _approve(
    session: SessionDep, principal: PrincipalDep, company: Company, state: SyncState, *, now: datetime
) -> None:
    if not state.pending_plan:
        raise NothingToApproveError(f"Company {company.external_id} has no change set waiting for approval")
    state.approved_generation = state.generation
    state.due_at = now
    state.status = "pending"
    await record_audit(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="change_set.approved",
        object_type="company",
        object_id=company.external_id,
        after=state.pending_plan,
    )


@router.post(
    "/companies/{company_id}/sync",
    response_model=SyncStatus,
    status_code=202,
    summary="Reconcile now; in review mode approve or dismiss the pending change set",
    responses=error_responses(NotAuthenticatedError, NotFoundError, NotReadyError, NothingToApproveError),
)
async def request_sync(
    company_id: CompanyPath,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
    body: SyncRequest | None = None,
) -> SyncStatus:
    body = body or SyncRequest()
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    if company.mapped_at is None:
        raise NotReadyError(f"Company {company_id} is not mapped to an agreement yet")
    state = await session.get(SyncState, company.id)
    if body.dismiss:
        if state is None or not state.pending_plan:
            raise NothingToApproveError(f"Company {company_id} has no change set waiting for approval")
        await record_audit(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="change_set.dismissed",
            object_type="company",
            object_id=company_id,
            before=state.pending_plan,
        )
        state.pending_plan, state.status = None, "dismissed"
    elif body.approve:
        if state is None:
            raise NothingToApproveError(f"Company {company_id} has no change set waiting for approval")
        await _approve(session, principal, company, state, now=ctx.now())
    else:
        reason = "drift_overwrite" if body.overwrite_drift else "manual"
        state = await schedule_sync(
            session, tenant_id=principal.tenant_id, company_id=company.id, reason=reason, at=ctx.now()
        )
        if body.overwrite_drift:
            await record_audit(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                action="drift.overwrite_requested",
                object_type="company",
                object_id=company_id,
                before={"drift": state.drift},
            )
    await session.flush()
    return _status(company, state)


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
    product = await session.get(BillingProduct, principal.tenant_id)
    mapped = select(Company).where(Company.tenant_id == principal.tenant_id, Company.mapped_at.is_not(None))
    total = await session.scalar(select(func.count()).select_from(mapped.subquery())) or 0
    companies = list(await session.scalars(mapped.order_by(Company.name, Company.id).limit(limit).offset(offset)))
    ids = [c.id for c in companies]
    states = {s.company_id: s for s in await session.scalars(select(SyncState).where(SyncState.company_id.in_(ids)))}
    tracked = list(
        await session.scalars(
            select(TrackedAddition).where(TrackedAddition.company_id.in_(ids), TrackedAddition.retired_at.is_(None))
        )
    )
    discrepancies = await session.scalar(
        select(func.coalesce(func.sum(SyncState.discrepancies), 0)).where(SyncState.tenant_id == principal.tenant_id)
    )
    rows = []
    for company in companies:
        state = states.get(company.id)
        snapshot = (state.cw_snapshot if state else None) or {}
        mine = [t for t in tracked if t.company_id == company.id]
        bases = sorted(
            (t for t in mine if t.kind == Kind.base.value and t.cw_agreement_id == company.cw_agreement_id),
            key=lambda t: t.marker,
        )
        base = bases[-1] if bases else None
        held = snapshot.get(str(base.cw_addition_id)) if base and base.cw_addition_id else None
        price = effective_price(company, product)
        problems: list[str] = [d["detail"] for d in (state.drift or [])] if state else []
        if state and state.last_error:
            problems.append(state.last_error)
        if company.cw_agreement_id is None:
            problems.append("not mapped: billing ends with the period it was unmapped in")
        elif held is None:
            problems.append("no base line in ConnectWise yet")
        else:
            if Decimal(held["quantity"]) != company.license_count:
                problems.append(f"quantity: portal {company.license_count}, ConnectWise {held['quantity']}")
            if price.unit_price is not None and Decimal(held["unit_price"]) != price.unit_price:
                problems.append(f"unit price: expected {money_str(price.unit_price)}, ConnectWise {held['unit_price']}")
            if price.unit_cost is not None and Decimal(held["unit_cost"]) != price.unit_cost:
                problems.append(f"unit cost: expected {money_str(price.unit_cost)}, ConnectWise {held['unit_cost']}")
        known = {t.cw_addition_id for t in mine}
        untracked = sorted(
            int(i)
            for i, a in snapshot.items()
            if int(i) not in known and not str(a.get("serial_number") or "").startswith("cwbs:")
        )
        if untracked:
            problems.append(f"additions of the product not managed by this service: {untracked}")
        if state and state.pending_plan:
            problems.append(f"change set waiting for approval ({state.pending_plan.get('reason')})")
        if state and state.discrepancies:
            problems.append(f"{state.discrepancies} period(s) whose lines do not add up to what they owe")
        rows.append(
            ReconciliationRow(
                company_id=company.external_id,
                name=company.name,
                portal_count=company.license_count,
                cw_quantity=_decimal_text(held["quantity"]) if held else None,
                unit_price=money_str(price.unit_price),
                cw_unit_price=money_str(Decimal(held["unit_price"])) if held else None,
                unit_cost=money_str(price.unit_cost),
                cw_unit_cost=money_str(Decimal(held["unit_cost"])) if held else None,
                status=state.status if state else "in_sync",
                in_step=not problems,
                problems=problems,
                discrepancies=state.discrepancies if state else 0,
                pending_change_set=state.pending_plan if state else None,
                untracked_additions=untracked,
            )
        )
    return ReconciliationRead(
        total=total, limit=limit, offset=offset, discrepancies=int(discrepancies or 0), items=rows
    )


def _decimal_text(value: object) -> str:
    number = Decimal(str(value))
    return f"{number.normalize():f}" if number == number.to_integral_value() else str(number)


@router.post(
    "/reconciliation/approve",
    response_model=BulkApproveResult,
    summary="Review mode: approve pending change sets in bulk",
    responses=error_responses(NotAuthenticatedError),
)
async def approve_all(
    body: BulkApprove, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> BulkApproveResult:
    statement = (
        select(Company, SyncState)
        .join(SyncState, SyncState.company_id == Company.id)
        .where(Company.tenant_id == principal.tenant_id, SyncState.pending_plan.is_not(None))
    )
    if body.company_ids is not None:
        statement = statement.where(Company.external_id.in_(body.company_ids))
    approved = []
    for company, state in (await session.execute(statement)).all():
        if state.pending_plan:
            await _approve(session, principal, company, state, now=ctx.now())
            approved.append(company.external_id)
    return BulkApproveResult(approved=sorted(approved))
