from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import IsoDateTime, MoneyStr


class PreviewRequest(BaseModel):
    license_count: int = Field(ge=0, le=10_000_000)
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


class PreviewResponse(BaseModel):
    company_id: str
    agreement_id: int
    agreement_name: str | None
    mode: Literal["line", "native", "none"]
    change_day: date
    period: PeriodRead
    base_before: LineValues
    base_after: LineValues
    proration_before: ProrationLine | None
    proration_after: ProrationLine | None
    proration_change: MoneyStr = Field(description="What this change adds to (or removes from) the next invoice")
    native_lines_after: list[NativeLine]
    native_expected_amount: MoneyStr | None
    message: str


class LedgerEntry(BaseModel):
    sequence: int | None
    license_count: int
    previous_count: int | None
    effective_at: datetime
    day: date
    received_at: datetime
    ignored_reason: str | None
    webhook_id: str | None


class ChargesResponse(BaseModel):
    company_id: str
    period: PeriodRead
    billed_quantity: int
    final_count: int
    unit_price: MoneyStr
    unit_cost: MoneyStr
    decrease_policy: str
    entries: list[LedgerEntry]
    segments: list[SegmentRead]
    seat_days: int
    amount: MoneyStr
    cost_amount: MoneyStr
    description: str


class SyncRequest(BaseModel):
    approve: bool = Field(default=False, description="Review mode: apply the pending change set")
    dismiss: bool = Field(default=False, description="Review mode: drop the pending change set")
    overwrite_drift: bool = Field(default=False, description="Write our values over a hand edit, once")


class SyncStatus(BaseModel):
    company_id: str
    status: str
    reason: str | None
    due: bool
    attempts: int
    last_error: str | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    drift: list[dict[str, Any]] | None
    pending_change_set: dict[str, Any] | None
    cw_additions: dict[str, Any] | None = Field(description="What CW held at the last reconcile, by addition id")


class ReconciliationRow(BaseModel):
    company_id: str
    name: str
    portal_count: int
    cw_quantity: str | None
    unit_price: MoneyStr | None
    cw_unit_price: str | None
    unit_cost: MoneyStr | None
    cw_unit_cost: str | None
    status: str
    in_step: bool
    problems: list[str]
    pending_change_set: dict[str, Any] | None
    untracked_additions: list[int]


class ReconciliationRead(BaseModel):
    items: list[ReconciliationRow]


class BulkApprove(BaseModel):
    company_ids: list[str] | None = Field(
        default=None, max_length=1000, description="Companies to approve; all pending ones when omitted"
    )


class BulkApproveResult(BaseModel):
    approved: list[str]
