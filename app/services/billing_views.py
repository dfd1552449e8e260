"""What the API shows of a company's money: the preview of a change, a period's charges, and the periods with the
lines that bill them and what CW invoiced. Computed by the same planner the sync runs, so a preview shows the lines
the sync will write."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.errors import CWError
from app.db.models import ChangeStatus, Company, LicenseChange, SyncState, Tenant
from app.domain.billing import Billing, PeriodOwed, ProrationMode, Schedule
from app.domain.history import Change, History
from app.domain.markers import Kind, Marker
from app.domain.money import count_text, format_money
from app.domain.periods import Period, local_day
from app.domain.plan import Line, Operation, Plan, frontier, plan, simulate
from app.domain.texts import period_text, proration_text
from app.errors import ConflictError
from app.schemas.common import money_str
from app.schemas.sync import (
    ChargesResponse,
    CWInvoiceRead,
    HistoryEntry,
    LineValues,
    NativeLine,
    PeriodLine,
    PeriodRead,
    PeriodRow,
    PeriodsResponse,
    PlannedLine,
    PreviewResponse,
    ProrationLine,
    SegmentRead,
)
from app.services.billing_target import Target, load_target, values_from_json
from app.services.cw_connections import NotConnectedError, tenant_client

ZERO = Decimal(0)


class NotReadyError(ConflictError):
    code = "not_ready"
    title = "The company cannot be billed yet"


def _period(period: Period) -> PeriodRead:
    return PeriodRead(start=period.start, end=period.end, days=period.days)


def _segments(owed: PeriodOwed) -> list[SegmentRead]:
    return [
        SegmentRead(start=s.start, end=s.end, days=s.days, count=s.count, delta=s.count - owed.billed_quantity)
        for s in owed.stretches
    ]


async def _snapshot_lines(session: AsyncSession, target: Target) -> list[Line]:
    """The company's lines as CW held them at the last reconcile (no CW call)."""
    state = await session.get(SyncState, target.company_pk)
    snapshot = (state.cw_snapshot if state else None) or {}
    lines = []
    for row in target.tracked:
        held = snapshot.get(str(row.addition_id)) if row.addition_id is not None else None
        current = values_from_json(held) if held and "effective" in held else row.written
        lines.append(row.as_line(current))
    return lines


async def _target(session: AsyncSession, tenant: Tenant, company: Company, now: datetime) -> Target:
    target = await load_target(session, tenant=tenant, company=company, now=now)
    if not target.billing.schedule or company.cw_agreement_id is None:
        raise NotReadyError(f"Company {company.external_id} is not mapped to an agreement yet")
    if target.product_id is None:
        raise NotReadyError("No product is mapped yet (PUT or POST /api/v1/billing/product)")
    return target


# ---------------------------------------------------------------------------------------------------- preview
async def preview(
    session: AsyncSession,
    *,
    tenant: Tenant,
    company: Company,
    license_count: int,
    effective_at: datetime | None,
    now: datetime,
) -> PreviewResponse:
    target = await _target(session, tenant, company, now)
    lines = await _snapshot_lines(session, target)
    situation = target.situation()
    before = plan(situation, lines)
    synced = simulate(lines, before.operations)  # as CW will hold it once what is already due has been synced
    before = plan(situation, synced)
    change_day = local_day(effective_at or now, tenant.timezone)
    history = target.billing.history
    sequence = max((c.sequence for c in history.changes), default=0) + 1
    changed = replace(target.billing, history=History([*history.changes, Change(change_day, sequence, license_count)]))
    after_situation = replace(situation, billing=changed)
    after = plan(after_situation, synced)
    schedule = target.billing.schedule
    period = schedule.period_containing(change_day) or schedule.period_containing(target.today)
    assert period is not None  # noqa: S101 (the company is mapped)
    f = frontier(situation)
    applies = tenant.billing_enabled and company.billing_active
    why = None if applies else ("billing is off for the tenant" if not tenant.billing_enabled else _why_off(company))
    proration_before = _proration(before, target.billing, period)
    proration_after = _proration(after, changed, period)
    catch_up = sum((op.values.unit_price for op in after.operations if op.marker.kind is Kind.catch_up), ZERO) - sum(
        (op.values.unit_price for op in before.operations if op.marker.kind is Kind.catch_up), ZERO
    )
    base_before = _base(target.billing, f)
    base_after = _base(changed, f)
    delta = Decimal(proration_after.amount if proration_after else 0) - Decimal(
        proration_before.amount if proration_before else 0
    )
    operations = [_planned(op, schedule) for op in after.operations]
    native = [
        NativeLine(
            quantity=int(op.values.quantity),
            effective_date=op.values.effective,
            cancelled_date=op.values.cancelled or period.end,
            description=op.values.description or "",
        )
        for op in after.operations
        if op.marker.kind is Kind.delta
    ]
    billed_with = schedule.next_period(period) if period.end >= target.today else f
    if f is not None and billed_with is not None and billed_with.start < f.start:
        billed_with = f
    message = _message(
        company=company,
        target=target,
        before_count=history.count_on(change_day),
        after=license_count,
        change_day=change_day,
        period=period,
        base_after=base_after,
        proration=proration_after,
        catch_up=catch_up,
        billed_with=billed_with,
        why=why,
    )
    return PreviewResponse(
        company_id=company.external_id,
        agreement_id=company.cw_agreement_id or 0,
        agreement_name=company.agreement_name,
        mode=target.billing.mode.value,
        change_day=change_day,
        period=_period(period),
        billed_with=_period(billed_with) if billed_with else None,
        will_bill=applies,
        not_billed_because=why,
        base_before=base_before,
        base_after=base_after,
        proration_before=proration_before,
        proration_after=proration_after,
        proration_change=money_str(delta) or "0.00",
        catch_up=money_str(catch_up) if catch_up else None,
        native_lines_after=native,
        native_expected_amount=(
            money_str(changed.owed(period).prorated_amount) if changed.mode is ProrationMode.native else None
        ),
        operations=operations,
        message=message,
    )


def _why_off(company: Company) -> str:
    if company.deleted_at is not None:
        return "the company was deleted in the portal"
    if company.cw_agreement_id is None:
        return "the company is not mapped to an agreement"
    return "billing is not enabled for the company (PATCH /api/v1/companies/{id}/billing)"


def _base(billing: Billing, f: Period | None) -> LineValues:
    base = billing.base_for(f) if f is not None else None
    if base is None:
        return LineValues(quantity=0, unit_price="0.00", unit_cost="0.00")
    count, price = base
    return LineValues(
        quantity=count, unit_price=money_str(price.unit_price) or "0.00", unit_cost=money_str(price.unit_cost) or "0.00"
    )


def _proration(result: Plan, billing: Billing, period: Period) -> ProrationLine | None:
    if billing.mode is not ProrationMode.line:
        return None
    account = next((a for a in result.accounts if a.period == period), None)
    owed = account.owed if account else billing.owed(period)
    if owed.prorated_amount == 0:
        return None
    following = billing.schedule.next_period(period) or period
    return ProrationLine(
        amount=money_str(owed.prorated_amount) or "0.00",
        cost_amount=money_str(owed.prorated_cost) or "0.00",
        seat_days=owed.seat_days,
        description=proration_text(owed),
        effective_date=following.start,
        cancelled_date=following.end,
        segments=_segments(owed),
    )


def _planned(op: Operation, schedule: Any) -> PlannedLine:
    billed_with = schedule.period_containing(op.values.effective)
    return PlannedLine(
        action=op.kind.value,
        line=op.marker.kind.value,
        agreement_id=op.agreement_id,
        cw_addition_id=op.addition_id,
        quantity=count_text(op.values.quantity),
        unit_price=money_str(op.values.unit_price) or "0.00",
        effective_date=op.values.effective,
        cancelled_date=op.values.cancelled,
        description=op.values.description,
        billed_with=_period(billed_with) if billed_with and op.marker.kind is not Kind.delta else None,
        reason=op.reason,
    )


def _message(
    *,
    company: Company,
    target: Target,
    before_count: int,
    after: int,
    change_day: date,
    period: Period,
    base_after: LineValues,
    proration: ProrationLine | None,
    catch_up: Decimal,
    billed_with: Period | None,
    why: str | None,
) -> str:
    currency = target.billing.currency
    agreement = company.agreement_name or str(company.cw_agreement_id)
    invoice = f"the invoice for {period_text(billed_with)}" if billed_with else "the next invoice"
    text = f"Licenses {before_count} → {after} on {change_day:%d %b %Y} will be applied to agreement '{agreement}'"
    if why is not None:
        return text + f", but nothing will be billed: {why}."
    if change_day > target.today:
        text += f" (it takes effect on {change_day:%d %b %Y}, when the worker comes back)"
    text += f": the base line becomes {base_after.quantity} × {format_money(Decimal(base_after.unit_price), currency)}"
    if target.billing.mode is ProrationMode.none:
        text += " from the next billing period; nothing is prorated"
    elif target.billing.mode is ProrationMode.native:
        text += "; ConnectWise prorates the added licenses on its own (the agreement's prorate setting)"
    elif proration is not None and period.end >= target.today:
        text += f"; a proration line of {format_money(Decimal(proration.amount), currency)} is billed on {invoice}"
        text += f" ({proration.description})"
    if catch_up:
        text += (
            f". This change is dated in a period whose lines are already billed ({period_text(period)}): an "
            f"adjustment of {format_money(catch_up, currency)} goes on {invoice}"
        )
    return text + "."


# ---------------------------------------------------------------------------------------------------- charges
async def charges(
    session: AsyncSession, *, tenant: Tenant, company: Company, day: date, now: datetime
) -> ChargesResponse:
    target = await _target(session, tenant, company, now)
    billing = target.billing
    period = billing.schedule.period_containing(day)
    if period is None:
        raise NotReadyError(f"Company {company.external_id} was not billed on {day}")
    owed = billing.owed(period)
    history = billing.history
    rows = await session.scalars(
        select(LicenseChange).where(LicenseChange.company_id == company.id).order_by(LicenseChange.effective_at)
    )
    entries = []
    for row in rows:
        row_day = local_day(row.effective_at, tenant.timezone)
        if not period.contains(row_day):
            continue
        before = history.count_before(row_day, row.sequence)
        entries.append(
            HistoryEntry(
                sequence=row.sequence,
                license_count=row.license_count,
                previous_count=row.previous_count,
                history_count_before=before,
                previous_count_agrees=None if row.previous_count is None else row.previous_count == before,
                effective_at=row.effective_at,
                day=row_day,
                received_at=row.received_at,
                status=row.status if row.status == ChangeStatus.conflict.value else "accepted",
                source="adopted" if row.source == "adopted" else "portal",
                webhook_id=row.webhook_id,
            )
        )
    entries.sort(key=lambda e: (e.day, e.sequence))
    return ChargesResponse(
        company_id=company.external_id,
        period=_period(period),
        billed_quantity=owed.billed_quantity,
        final_count=history.count_on(period.end),
        unit_price=money_str(owed.unit_price) or "0.00",
        unit_cost=money_str(owed.unit_cost) or "0.00",
        decrease_policy=billing.policy.value,
        new_customer_from=owed.new_customer_from,
        entries=entries,
        segments=_segments(owed),
        seat_days=owed.seat_days,
        base_amount=money_str(owed.base_amount) or "0.00",
        amount=money_str(owed.prorated_amount) or "0.00",
        cost_amount=money_str(owed.prorated_cost) or "0.00",
        owed=money_str(owed.owed) or "0.00",
        description=proration_text(owed),
    )


# ---------------------------------------------------------------------------------------------------- periods
async def periods(
    session: AsyncSession,
    ctx: Any,
    *,
    tenant: Tenant,
    company: Company,
    first: date | None,
    last: date | None,
    now: datetime,
) -> PeriodsResponse:
    target = await _target(session, tenant, company, now)
    lines = await _snapshot_lines(session, target)
    result = plan(target.situation(), lines)
    schedule = target.billing.schedule
    last = last or target.today
    first = first or (last - timedelta(days=92))
    invoices, read = await _invoices(session, ctx, tenant.id, {line.agreement_id for line in lines}, first)
    rows = []
    invoiced_starts = {i.date for i in invoices if i.date is not None}
    for account in result.accounts:
        period = account.period
        if period.end < first or period.start > last:
            continue
        owed = account.owed
        period_lines = [
            PeriodLine(
                line=marker.kind.value,
                cw_addition_id=_addition(lines, marker, agreement),
                agreement_id=agreement,
                amount=money_str(amount) or "0.00",
                billed_with=_billed_with(marker, period, schedule),
                frozen=frozen,
            )
            for marker, agreement, amount, frozen in account.lines
        ]
        invoice = next((i for i in invoices if i.date == period.start), None)
        rows.append(
            PeriodRow(
                start=period.start,
                end=period.end,
                days=period.days,
                agreement_id=owed.agreement_id,
                billed_quantity=owed.billed_quantity,
                unit_price=money_str(owed.unit_price) or "0.00",
                base_amount=money_str(owed.base_amount) or "0.00",
                prorated_amount=money_str(owed.prorated_amount) or "0.00",
                owed=money_str(owed.owed) or "0.00",
                billed=money_str(account.frozen + account.open) or "0.00",
                lines=period_lines,
                cw_invoice=invoice,
                state=_state(period, account.frozen, account.open, owed.owed, period_lines, invoiced_starts, target),
            )
        )
    return PeriodsResponse(company_id=company.external_id, currency=tenant.currency, invoices_read=read, periods=rows)


def _addition(lines: list[Line], marker: Marker, agreement: int) -> int | None:
    return next(
        (x.addition_id for x in lines if x.marker == marker and x.agreement_id == agreement and x.addition_id), None
    )


def _billed_with(marker: Marker, period: Period, schedule: Schedule) -> date:
    if marker.kind is Kind.base:
        return period.start
    if marker.kind is Kind.catch_up and marker.second is not None:
        return marker.second
    following = schedule.next_period(period)
    return following.start if following else period.end + timedelta(days=1)


def _state(
    period: Period,
    frozen: Decimal,
    open_amount: Decimal,
    owed: Decimal,
    lines: list[PeriodLine],
    invoiced: set[date],
    target: Target,
) -> Any:
    if period.end >= target.today:
        return "open"
    if frozen + open_amount != owed:
        return "discrepancy"
    if lines and all(line.billed_with in invoiced for line in lines):
        return "settled"
    if period.start in invoiced:
        return "invoiced"
    return "closed"


async def _invoices(
    session: AsyncSession, ctx: Any, tenant_id: str, agreements: set[int], since: date
) -> tuple[list[CWInvoiceRead], bool]:
    """The agreements' invoices dated from `since` on; ([], False) when they cannot be read."""
    try:
        client = await tenant_client(ctx, session, tenant_id)
        found = []
        for agreement in sorted(agreements):
            start = datetime.combine(since - timedelta(days=31), time(0), tzinfo=UTC)
            for invoice in await client.list_invoices(agreement_id=agreement, since=start):
                found.append(
                    CWInvoiceRead(
                        id=invoice.id,
                        invoice_number=invoice.invoice_number,
                        date=invoice.date.date() if invoice.date else None,
                        agreement_amount=money_str(invoice.agreement_amount),
                        agreement_id=invoice.agreement.id if invoice.agreement else None,
                    )
                )
        return found, True
    except (CWError, NotConnectedError):
        return [], False


__all__ = ["NotReadyError", "charges", "periods", "preview"]
