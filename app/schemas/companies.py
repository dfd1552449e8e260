from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import MoneyStr, Page, PriceIn, SyncCondition

CompanyId = str


class CompanyMapping(BaseModel):
    cw_company_id: int
    cw_agreement_id: int
    agreement_name: str | None
    billing_cycle: str | None
    bill_start_date: date | None
    agreement_prorate: bool | None
    base_addition_id: int | None = Field(description="The CW addition this company's licenses are billed on")
    adopted: bool = Field(description="True when an existing addition was adopted instead of creating one")


class CompanyPricing(BaseModel):
    unit_price: MoneyStr | None
    unit_cost: MoneyStr | None
    price_source: Literal["override", "product_default", "unset"]
    cost_source: Literal["override", "product_default", "unset"]
    unit_price_override: MoneyStr | None
    unit_cost_override: MoneyStr | None


class CompanySyncSummary(BaseModel):
    status: SyncCondition = Field(description="Where the sync stands; `cause` says why, `action` what to do")
    cause: str | None
    action: str | None
    reason: str | None
    due: bool
    attempts: int
    last_error: str | None
    last_success_at: datetime | None


class CompanyRead(BaseModel):
    company_id: CompanyId
    name: str
    identifier: str | None
    license_count: int
    billing_enabled: bool
    deleted: bool
    mapping: CompanyMapping | None
    pricing: CompanyPricing
    sync: CompanySyncSummary


class CompanyPageRead(Page):
    items: list[CompanyRead]


class CompanyUpsert(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    identifier: str | None = Field(default=None, max_length=100)


class CWCompanyRead(BaseModel):
    id: int
    identifier: str
    name: str
    status: str | None


class CWAgreementRead(BaseModel):
    id: int
    name: str
    type: str | None
    status: str | None
    cancelled: bool
    billing_cycle: str | None
    bill_start_date: datetime | None
    end_date: datetime | None
    prorate: bool | None
    company_id: int | None


class SuggestionRead(BaseModel):
    cw_company_id: int
    identifier: str
    name: str
    reason: Literal["exact_identifier", "exact_name", "similar_name"]
    score: float
    auto_applicable: bool = Field(description="Only exact matches may be applied automatically")


class MappingUpdate(BaseModel):
    cw_company_id: int = Field(ge=1, le=2**31 - 1)
    cw_agreement_id: int = Field(ge=1, le=2**31 - 1)
    share_agreement: bool = Field(
        default=False,
        description="Map it although another portal company is mapped to this agreement (otherwise 409 "
        "`agreement_shared`); each company's lines then carry its name",
    )


class BillingUpdate(BaseModel):
    """ "Edit Billing": a field left out stays as it is; `null` for a price clears the override."""

    enabled: bool | None = None
    unit_price: PriceIn | None = None
    unit_cost: PriceIn | None = None
