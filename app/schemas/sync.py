from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import IsoDateTime, MoneyStr, SyncCondition


class PreviewRequest(BaseModel):
    license_count: int = Field(ge=0, le=1_000_000, strict=True)
    effective_at: IsoDateTime | None = Field(default=None, description="Defaults to now")


class PeriodRead(BaseModel):
    start: date
    end: date
    days: int


class LineValues(BaseModel):
    quantity: int
    unit_price: MoneyStr
    unit_cost: MoneyStr


class SegmentRead(BaseModel):
    start: date
    end: date
    days: int
    count: int
    delta: int


class ProrationLine(BaseModel):
    amount: MoneyStr
    cost_amount: MoneyStr
    seat_days: int
    description: str
    effective_date: date
    cancelled_date: date
    segments: list[SegmentRead]


class NativeLine(BaseModel):
    quantity: int
    effective_date: date
    cancelled_date: date
    description: str


class PlannedLine(BaseModel):
    """A line the sync would create, change or delete (a line that never billed and is no longer wanted)."""

    action: Literal["create", "patch", "delete"]
    line: Literal["base", "proration", "catch_up", "delta"]
    agreement_id: int
    cw_addition_id: int | None
    quantity: str
    unit_price: MoneyStr
    effective_date: date
    cancelled_date: date | None
    description: str | None
    billed_with: PeriodRead | None = Field(description="The period whose invoice bills this line")
    reason: str


class PreviewResponse(BaseModel):
    company_id: str
    agreement_id: int
    agreement_name: str | None
    mode: Literal["line", "native", "none"]
    change_day: date
    period: PeriodRead = Field(description="The billing period the change is dated in")
    billed_with: PeriodRead | None = Field(description="The period whose invoice bills this change's amounts")
    will_bill: bool = Field(description="False when billing is off for the company or the tenant")
    not_billed_because: str | None
    base_before: LineValues
    base_after: LineValues
    proration_before: ProrationLine | None
    proration_after: ProrationLine | None
    proration_change: MoneyStr = Field(description="What this change adds to (or removes from) the next invoice")
    catch_up: MoneyStr | None = Field(
        description="An adjustment for an invoiced period, when the change is dated there"
    )
    native_lines_after: list[NativeLine]
    native_expected_amount: MoneyStr | None
    operations: list[PlannedLine] = Field(description="What the sync would write for this change")
    message: str


class HistoryEntry(BaseModel):
    sequence: int
    license_count: int
    previous_count: int | None
    history_count_before: int = Field(description="The history's count just before this change")
    previous_count_agrees: bool | None = Field(description="None when the portal sent no previous_count")
    effective_at: datetime
    day: date
    received_at: datetime
    status: Literal["accepted", "conflict"]
    source: Literal["portal", "adopted"]
    webhook_id: str | None


class ChargesResponse(BaseModel):
    company_id: str
    period: PeriodRead
    billed_quantity: int
    final_count: int
    unit_price: MoneyStr
    unit_cost: MoneyStr
    decrease_policy: str
    new_customer_from: date | None = Field(description="Billing started on this day inside the period")
    entries: list[HistoryEntry]
    segments: list[SegmentRead]
    seat_days: int
    base_amount: MoneyStr = Field(description="B × price, billed in advance by the base line")
    amount: MoneyStr = Field(description="The prorated amount of the period")
    cost_amount: MoneyStr
    owed: MoneyStr = Field(description="What the period owes: base + prorated")
    description: str


class PeriodLine(BaseModel):
    line: Literal["base", "proration", "catch_up", "delta"]
    cw_addition_id: int | None
    agreement_id: int
    amount: MoneyStr = Field(description="What this line bills for the period")
    billed_with: date = Field(description="The first day of the period whose invoice bills it")
    frozen: bool = Field(description="An invoice covering it may exist: it is never changed again")


class CWInvoiceRead(BaseModel):
    id: int
    invoice_number: str | None
    date: date | None
    agreement_amount: MoneyStr | None
    agreement_id: int | None


class PeriodRow(BaseModel):
    start: date
    end: date
    days: int
    agreement_id: int | None
    billed_quantity: int = Field(description="B: the count at the end of the day before the period")
    unit_price: MoneyStr
    base_amount: MoneyStr
    prorated_amount: MoneyStr
    owed: MoneyStr
    billed: MoneyStr = Field(description="What the lines below bill for it")
    lines: list[PeriodLine]
    cw_invoice: CWInvoiceRead | None = Field(description="CW's agreement invoice for the period, when it can be read")
    state: Literal["open", "closed", "invoiced", "settled", "discrepancy"]


class PeriodsResponse(BaseModel):
    company_id: str
    currency: str
    invoices_read: bool = Field(description="False when CW's invoices could not be read (not connected, an error)")
    periods: list[PeriodRow]


class SyncRequest(BaseModel):
    approve: bool = Field(default=False, description="Review mode: apply the pending change set")
    dismiss: bool = Field(default=False, description="Review mode: drop the pending change set")
    overwrite_drift: bool = Field(default=False, description="Write our values over a hand edit, once")


class SyncStatus(BaseModel):
    company_id: str
    status: SyncCondition = Field(description="Where the sync stands; `cause` says why, `action` what to do")
    cause: str | None = Field(description="Why it is not in sync (null when it is)")
    action: str | None = Field(description="What would move it on (null when nothing is needed)")
    reason: str | None = Field(description="What asked for the last reconcile (a license change, a price change, …)")
    due: bool
    attempts: int
    last_error: str | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    drift: list[dict[str, Any]] | None
    pending_change_set: dict[str, Any] | None
    cw_additions: dict[str, Any] | None = Field(description="What CW held at the last reconcile, by addition id")


class BulkRetryResult(BaseModel):
    requeued: int = Field(description="Companies queued again")


class ReconciliationRow(BaseModel):
    company_id: str
    name: str
    portal_count: int
    cw_quantity: str | None
    unit_price: MoneyStr | None
    cw_unit_price: str | None
    unit_cost: MoneyStr | None
    cw_unit_cost: str | None
    status: SyncCondition
    cause: str | None
    in_step: bool
    problems: list[str]
    discrepancies: int = Field(description="Periods whose lines do not add up to what they owe")
    pending_change_set: dict[str, Any] | None
    untracked_additions: list[int]


class ReconciliationRead(BaseModel):
    total: int
    limit: int
    offset: int
    discrepancies: int = Field(description="Periods in discrepancy across the tenant")
    items: list[ReconciliationRow]


class BulkApprove(BaseModel):
    company_ids: list[str] | None = Field(
        default=None, max_length=1000, description="Companies to approve; all pending ones when omitted"
    )


class BulkApproveResult(BaseModel):
    approved: list[str]
