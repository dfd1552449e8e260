"""What integrators see of the sync and steer it with: a company's sync state, "reconcile now", review mode's change
sets (approve, dismiss, approve in bulk) and the reconciliation of every mapped company against what CW holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Company, SyncState, SyncStatus, Tenant
from app.db.repositories.additions import live_additions, newest_base_of
from app.db.repositories.companies import (
    CompanyFilter,
    awaiting_approval,
    company_page,
    discrepancy_total,
    sync_states,
)
from app.domain.markers import is_ours
from app.domain.money import count_text
from app.errors import ConflictError
from app.schemas.common import SyncCondition, money_str
from app.schemas.sync import ReconciliationRead, ReconciliationRow, SyncRequest
from app.schemas.sync import SyncStatus as SyncStatusRead
from app.security.principal import Principal
from app.services.audit import record_audit
from app.services.billing_setup import get_product
from app.services.billing_views import NotReadyError
from app.services.mapping import effective_price
from app.services.sync_condition import Condition, condition, summary
from app.services.sync_schedule import requeue_stuck, schedule_sync
from app.services.tenants import get_tenant


class NothingToApproveError(ConflictError):
    code = "nothing_to_approve"
    title = "There is no pending change set"


class CannotSyncError(ConflictError):
    """409 whose `code` is the sync status that keeps the company from syncing (the detail says why and what to do)."""

    title = "This company cannot be reconciled now"

    def __init__(self, blocked: Condition) -> None:
        super().__init__(f"{blocked.cause}; {blocked.action}", extra={"action": blocked.action})


class NotMappedError(CannotSyncError):
    code = SyncCondition.not_mapped.value
    title = "The company is not mapped to an agreement"


class BillingOffForTenantError(CannotSyncError):
    code = SyncCondition.billing_off_for_tenant.value
    title = "Billing is off for the tenant"


_CANNOT_SYNC: dict[SyncCondition, type[CannotSyncError]] = {
    SyncCondition.not_mapped: NotMappedError,
    SyncCondition.billing_off_for_tenant: BillingOffForTenantError,
}


def status_view(tenant: Tenant, company: Company, state: SyncState | None) -> SyncStatusRead:
    return SyncStatusRead(
        company_id=company.external_id,
        **summary(tenant, company, state),
        last_attempt_at=state.last_attempt_at if state else None,
        drift=state.drift if state else None,
        pending_change_set=state.pending_plan if state else None,
        cw_additions=state.cw_snapshot if state else None,
    )


async def sync_status(session: AsyncSession, company: Company) -> SyncStatusRead:
    tenant = await get_tenant(session, company.tenant_id)
    return status_view(tenant, company, await session.get(SyncState, company.id))


async def _approve(
    session: AsyncSession, principal: Principal, company: Company, state: SyncState, *, now: datetime
) -> None:
    if not state.pending_plan:
        raise NothingToApproveError(f"Company {company.external_id} has no change set waiting for approval")
    state.approved_generation = state.generation
    state.due_at = now
    state.status = SyncStatus.pending
    await record_audit(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="change_set.approved",
        object_type="company",
        object_id=company.external_id,
        after=state.pending_plan,
    )


async def request_sync(
    session: AsyncSession, principal: Principal, company: Company, body: SyncRequest, *, now: datetime
) -> SyncStatusRead:
    """Reconcile now (optionally overwriting held drift), or approve / dismiss the pending change set. Where a
    reconcile can do nothing (never mapped, billing off for the tenant) it is refused with 409 saying why and what to
    do; a company whose billing stopped can still be reconciled (its lines must end)."""
    tenant = await get_tenant(session, company.tenant_id)
    state = await session.get(SyncState, company.id)
    blocked = condition(tenant, company, state)
    if not (body.approve or body.dismiss) and blocked.blocks_sync:
        raise _CANNOT_SYNC[blocked.status](blocked)
    if company.mapped_at is None:
        raise NotReadyError(f"Company {company.external_id} is not mapped to an agreement yet")
    if body.dismiss:
        if state is None or not state.pending_plan:
            raise NothingToApproveError(f"Company {company.external_id} has no change set waiting for approval")
        await record_audit(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="change_set.dismissed",
            object_type="company",
            object_id=company.external_id,
            before=state.pending_plan,
        )
        state.pending_plan, state.status = None, SyncStatus.dismissed
    elif body.approve:
        if state is None:
            raise NothingToApproveError(f"Company {company.external_id} has no change set waiting for approval")
        await _approve(session, principal, company, state, now=now)
    else:
        reason = "drift_overwrite" if body.overwrite_drift else "manual"
        state = await schedule_sync(
            session, tenant_id=principal.tenant_id, company_id=company.id, reason=reason, at=now
        )
        if body.overwrite_drift:
            await record_audit(
                session,
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                action="drift.overwrite_requested",
                object_type="company",
                object_id=company.external_id,
                before={"drift": state.drift},
            )
    await session.flush()
    return status_view(tenant, company, state)


async def approve_all(
    session: AsyncSession, principal: Principal, company_ids: Sequence[str] | None, *, now: datetime
) -> list[str]:
    """Approve every waiting change set (of these portal companies, when given); the portal ids approved."""
    approved = []
    for company, state in await awaiting_approval(session, principal.tenant_id, company_ids):
        if state.pending_plan:
            await _approve(session, principal, company, state, now=now)
            approved.append(company.external_id)
    return sorted(approved)


async def retry_stuck(session: AsyncSession, tenant_id: str, *, now: datetime) -> int:
    """Every company whose sync failed or keeps retrying, queued again at once."""
    return await requeue_stuck(session, tenant_id=tenant_id, reason="manual_retry", at=now)


async def reconciliation(session: AsyncSession, tenant_id: str, *, limit: int, offset: int) -> ReconciliationRead:
    """Every company ever mapped, a page at a time: the portal's count and the expected price and cost against what
    CW holds on the base line (as the last reconcile read it), and every reason they are not in step."""
    tenant = await get_tenant(session, tenant_id)
    product = await get_product(session, tenant_id)
    total, companies = await company_page(
        session, tenant_id, CompanyFilter(ever_mapped=True), limit=limit, offset=offset
    )
    ids = [c.id for c in companies]
    states = await sync_states(session, ids)
    tracked = await live_additions(session, ids)
    rows = []
    for company in companies:
        state = states.get(company.id)
        where = condition(tenant, company, state)
        snapshot = (state.cw_snapshot if state else None) or {}
        mine = [t for t in tracked if t.company_id == company.id]
        base = newest_base_of(mine, agreement_id=company.cw_agreement_id)
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
            int(i) for i, a in snapshot.items() if int(i) not in known and not is_ours(a.get("serial_number"))
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
                cw_quantity=count_text(Decimal(str(held["quantity"]))) if held else None,
                unit_price=money_str(price.unit_price),
                cw_unit_price=money_str(Decimal(held["unit_price"])) if held else None,
                unit_cost=money_str(price.unit_cost),
                cw_unit_cost=money_str(Decimal(held["unit_cost"])) if held else None,
                status=where.status,
                cause=where.cause,
                in_step=not problems,
                problems=problems,
                discrepancies=state.discrepancies if state else 0,
                pending_change_set=state.pending_plan if state else None,
                untracked_additions=untracked,
            )
        )
    return ReconciliationRead(
        total=total,
        limit=limit,
        offset=offset,
        discrepancies=await discrepancy_total(session, tenant_id),
        items=rows,
    )
