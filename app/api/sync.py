"""Preview, charges, sync state and reconciliation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import select

from app.api.deps import ContextDep, PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.common import money_str
from app.api.schemas.sync import (
    BulkApprove,
    BulkApproveResult,
    ChargesResponse,
    LedgerEntry,
    LineValues,
    NativeLine,
    PeriodRead,
    PreviewRequest,
    PreviewResponse,
    ProrationLine,
    ReconciliationRead,
    ReconciliationRow,
    SegmentRead,
    SyncRequest,
    SyncStatus,
)
from app.db.models import BillingProduct, Company, SyncState, TrackedAddition
from app.domain.periods import BillingCycle, Period, period_containing
from app.domain.plan import BillingInputs, Role, describe_change, desired_additions, native_expected_amount
from app.domain.proration import (
    CountChange,
    DecreasePolicy,
    PeriodCharge,
    ProrationMode,
    charge_description,
    local_day,
    period_charge,
)
from app.errors import ConflictError, NotAuthenticatedError, NotFoundError
from app.services.audit import record_audit
from app.services.billing_inputs import NotReadyError, count_changes, effective_price, ledger, load_inputs
from app.services.companies import get_company
from app.services.sync_schedule import schedule_sync
from app.services.tenants import get_tenant

router = APIRouter(prefix="/api/v1", tags=["sync"])
CompanyPath = Annotated[str, Path(min_length=1, max_length=100, description="The portal's company id")]


class NothingToApproveError(ConflictError):
    code = "nothing_to_approve"
    title = "There is no pending change set"


def _period(period: Period) -> PeriodRead:
    return PeriodRead(start=period.start, end=period.end, days=period.days)


def _segments(charge: PeriodCharge) -> list[SegmentRead]:
    return [
        SegmentRead(start=s.start, end=s.end, days=s.days, count=s.count, delta=s.count - charge.billed_quantity)
        for s in charge.segments
    ]


def _proration(inputs: BillingInputs) -> ProrationLine | None:
    if inputs.mode is not ProrationMode.line:
        return None
    charge = inputs.charge()
    if charge.amount == 0:
        return None
    following = inputs.next_period
    return ProrationLine(
        amount=money_str(charge.amount) or "0.00",
        cost_amount=money_str(charge.cost_amount) or "0.00",
        seat_days=charge.seat_days,
        description=charge_description(charge),
        effective_date=following.start,
        cancelled_date=following.end,
        segments=_segments(charge),
    )


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
    now = ctx.now()  # the billing clock, as the worker's: "today" decides the period the change lands in
    before = await load_inputs(session, tenant=tenant, company=company, now=now)
    effective = body.effective_at or now
    last_order = max((c.order for c in before.changes), default=0)
    change = CountChange(local_day(effective, tenant.timezone), body.license_count, last_order + 1)
    after = await load_inputs(
        session, tenant=tenant, company=company, now=now, extra=change, license_count=body.license_count
    )
    prior, future = _proration(before), _proration(after)
    delta = Decimal(future.amount if future else 0) - Decimal(prior.amount if prior else 0)
    native = [
        NativeLine(
            quantity=int(d.fields.quantity),
            effective_date=d.fields.effective_date or change.day,
            cancelled_date=d.fields.cancelled_date or after.period.end,
            description=d.fields.invoice_description or "",
        )
        for d in desired_additions(after)
        if d.role is Role.delta
    ]
    charge = after.charge() if after.mode is ProrationMode.line else None
    message = describe_change(
        agreement=company.agreement_name or str(company.cw_agreement_id),
        before=company.license_count,
        after=body.license_count,
        charge=charge,
        currency=after.currency,
        unit_price=after.unit_price,
        mode=after.mode,
    )
    if change.day < after.period.start:
        message += (
            f" The change is dated {change.day}, before the current period ({after.period.start}): it sets "
            "the quantity billed for this period and is not prorated."
        )
    return PreviewResponse(
        company_id=company.external_id,
        agreement_id=company.cw_agreement_id or 0,
        agreement_name=company.agreement_name,
        mode=after.mode.value,
        change_day=change.day,
        period=_period(after.period),
        base_before=LineValues(
            quantity=company.license_count,
            unit_price=money_str(before.unit_price) or "0.00",
            unit_cost=money_str(before.unit_cost) or "0.00",
        ),
        base_after=LineValues(
            quantity=body.license_count,
            unit_price=money_str(after.unit_price) or "0.00",
            unit_cost=money_str(after.unit_cost) or "0.00",
        ),
        proration_before=prior,
        proration_after=future,
        proration_change=money_str(delta) or "0.00",
        native_lines_after=native,
        native_expected_amount=money_str(native_expected_amount(after)) if after.mode is ProrationMode.native else None,
        message=message,
    )


@router.get(
    "/companies/{company_id}/charges",
    response_model=ChargesResponse,
    summary="The license ledger and prorated amount of the billing period containing a date",
    responses=error_responses(NotAuthenticatedError, NotFoundError, NotReadyError),
)
async def charges(
    company_id: CompanyPath,
    principal: PrincipalDep,
    session: SessionDep,
    period: Annotated[date, Query(description="Any date in the billing period, YYYY-MM-DD")],
) -> ChargesResponse:
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    tenant = await get_tenant(session, principal.tenant_id)
    if company.billing_cycle is None or company.bill_start_date is None:
        raise NotReadyError(f"Company {company_id} is not mapped to an agreement yet")
    product = await session.get(BillingProduct, tenant.id)
    price = effective_price(company, product)
    window = period_containing(period, cycle=BillingCycle(company.billing_cycle), anchor=company.bill_start_date)
    everything = await ledger(session, company, include_ignored=True)
    changes, opening = count_changes([r for r in everything if r.ignored_reason is None], tenant.timezone)
    charge = period_charge(
        period=window,
        changes=changes,
        opening_count=opening,
        unit_price=price.unit_price or Decimal(0),
        unit_cost=price.unit_cost or Decimal(0),
        policy=DecreasePolicy(tenant.decrease_policy),
        currency=tenant.currency,
    )
    rows = sorted(everything, key=lambda r: (r.effective_at, r.id))
    entries = [
        LedgerEntry(
            sequence=r.sequence,
            license_count=r.license_count,
            previous_count=r.previous_count,
            effective_at=r.effective_at,
            day=local_day(r.effective_at, tenant.timezone),
            received_at=r.received_at,
            ignored_reason=r.ignored_reason,
            webhook_id=r.webhook_id,
        )
        for r in rows
        if window.contains(local_day(r.effective_at, tenant.timezone))
    ]
    return ChargesResponse(
        company_id=company.external_id,
        period=_period(window),
        billed_quantity=charge.billed_quantity,
        final_count=charge.final_count,
        unit_price=money_str(charge.unit_price) or "0.00",
        unit_cost=money_str(charge.unit_cost) or "0.00",
        decrease_policy=tenant.decrease_policy,
        entries=entries,
        segments=_segments(charge),
        seat_days=charge.seat_days,
        amount=money_str(charge.amount) or "0.00",
        cost_amount=money_str(charge.cost_amount) or "0.00",
        description=charge_description(charge),
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


async def _approve(session: SessionDep, principal: PrincipalDep, company: Company, state: SyncState) -> None:
    if not state.pending_plan:
        raise NothingToApproveError(f"Company {company.external_id} has no change set waiting for approval")
    state.approved_generation = state.generation
    state.due_at = datetime.now(UTC)
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
    response: Response,
    body: SyncRequest | None = None,
) -> SyncStatus:
    body = body or SyncRequest()
    company = await get_company(session, tenant_id=principal.tenant_id, external_id=company_id)
    if company.cw_agreement_id is None:
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
        await _approve(session, principal, company, state)
    else:
        reason = "drift_overwrite" if body.overwrite_drift else "manual"
        state = await schedule_sync(session, tenant_id=principal.tenant_id, company_id=company.id, reason=reason)
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
    summary="Every mapped company: portal count vs CW quantity, price/cost vs CW, drift and why",
    responses=error_responses(NotAuthenticatedError),
)
async def reconciliation(principal: PrincipalDep, session: SessionDep) -> ReconciliationRead:
    product = await session.get(BillingProduct, principal.tenant_id)
    companies = list(
        await session.scalars(
            select(Company)
            .where(Company.tenant_id == principal.tenant_id, Company.cw_agreement_id.is_not(None))
            .order_by(Company.name)
        )
    )
    ids = [c.id for c in companies]
    states = {s.company_id: s for s in await session.scalars(select(SyncState).where(SyncState.company_id.in_(ids)))}
    tracked = list(
        await session.scalars(
            select(TrackedAddition).where(TrackedAddition.company_id.in_(ids), TrackedAddition.retired_at.is_(None))
        )
    )
    rows = []
    for company in companies:
        state = states.get(company.id)
        snapshot = (state.cw_snapshot if state else None) or {}
        mine = [t for t in tracked if t.company_id == company.id]
        base = next((t for t in mine if t.role == "base"), None)
        held = snapshot.get(str(base.cw_addition_id)) if base and base.cw_addition_id else None
        price = effective_price(company, product)
        problems: list[str] = [d["detail"] for d in (state.drift or [])] if state else []
        if state and state.last_error:
            problems.append(state.last_error)
        if held is None:
            problems.append("no base addition in ConnectWise yet")
        else:
            if Decimal(held["quantity"]) != company.license_count:
                problems.append(f"quantity: portal {company.license_count}, ConnectWise {held['quantity']}")
            if price.unit_price is not None and Decimal(held["unit_price"]) != price.unit_price:
                problems.append(f"unit price: expected {money_str(price.unit_price)}, ConnectWise {held['unit_price']}")
            if price.unit_cost is not None and Decimal(held["unit_cost"]) != price.unit_cost:
                problems.append(f"unit cost: expected {money_str(price.unit_cost)}, ConnectWise {held['unit_cost']}")
        known = {t.cw_addition_id for t in mine}
        untracked = sorted(int(i) for i in snapshot if int(i) not in known)
        if untracked:
            problems.append(f"additions of the product not managed by this service: {untracked}")
        if state and state.pending_plan:
            problems.append(f"change set waiting for approval ({state.pending_plan.get('reason')})")
        rows.append(
            ReconciliationRow(
                company_id=company.external_id,
                name=company.name,
                portal_count=company.license_count,
                cw_quantity=held["quantity"] if held else None,
                unit_price=money_str(price.unit_price),
                cw_unit_price=held["unit_price"] if held else None,
                unit_cost=money_str(price.unit_cost),
                cw_unit_cost=held["unit_cost"] if held else None,
                status=state.status if state else "in_sync",
                in_step=not problems,
                problems=problems,
                pending_change_set=state.pending_plan if state else None,
                untracked_additions=untracked,
            )
        )
    return ReconciliationRead(items=rows)


@router.post(
    "/reconciliation/approve",
    response_model=BulkApproveResult,
    summary="Review mode: approve pending change sets in bulk",
    responses=error_responses(NotAuthenticatedError),
)
async def approve_all(body: BulkApprove, principal: PrincipalDep, session: SessionDep) -> BulkApproveResult:
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
            await _approve(session, principal, company, state)
            approved.append(company.external_id)
    return BulkApproveResult(approved=sorted(approved))
