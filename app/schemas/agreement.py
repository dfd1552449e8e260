from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel


class AgreementLine(BaseModel):
    addition_id: int
    product: str | None
    role: Literal["base", "proration", "catch_up", "delta", "other"]
    quantity: str
    unit_price: str
    unit_cost: str
    ext_price: str
    effective_date: date | None
    cancelled_date: date | None
    invoice_description: str | None


class AgreementView(BaseModel):
    company_id: str
    agreement_id: int
    agreement_name: str
    cw_company: str | None
    billing_cycle: str | None
    bill_start_date: date | None
    prorate: bool | None
    lines: list[AgreementLine]
    text: str
