"""ConnectWise objects as this service reads them: parsed at the boundary, unknown fields ignored.

Money comes back as JSON numbers; it is read as Decimal from the number's text (never through float)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CWModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Ref(CWModel):
    id: int | None = None
    name: str | None = None
    identifier: str | None = None


def _to_decimal(value: Any) -> Any:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, int | float | str):
        return Decimal(str(value))
    return value


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value or None


class Info(CWModel):
    version: str | None = None
    is_cloud: bool | None = Field(default=None, alias="isCloud")
    server_time_zone: str | None = Field(default=None, alias="serverTimeZone")
    cloud_region: str | None = Field(default=None, alias="cloudRegion")


class CompanyInfo(CWModel):
    """`/login/companyinfo/{company}` (PascalCase, strings for booleans)."""

    company_name: str | None = Field(default=None, alias="CompanyName")
    codebase: str = Field(alias="Codebase")
    version_code: str | None = Field(default=None, alias="VersionCode")
    is_cloud: bool = Field(default=False, alias="IsCloud")

    @field_validator("is_cloud", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        return value.strip().lower() == "true" if isinstance(value, str) else value


class Company(CWModel):
    id: int
    identifier: str
    name: str
    status: Ref | None = None
    deleted_flag: bool | None = Field(default=None, alias="deletedFlag")
    info: dict[str, Any] | None = Field(default=None, alias="_info")


def _to_moment(value: Any) -> Any:
    """A date-time CW sends as a plain string (`nextInvoiceDate`, `lastInvoiceDate`): None when unreadable."""
    if isinstance(value, str) and value:
        try:
            return _to_datetime(value)
        except ValueError:
            return None
    return value or None


class Count(CWModel):
    count: int


class Agreement(CWModel):
    id: int
    name: str
    type: Ref | None = None
    company: Ref | None = None
    start_date: datetime | None = Field(default=None, alias="startDate")
    end_date: datetime | None = Field(default=None, alias="endDate")
    no_ending_date_flag: bool | None = Field(default=None, alias="noEndingDateFlag")
    cancelled_flag: bool | None = Field(default=None, alias="cancelledFlag")
    agreement_status: str | None = Field(default=None, alias="agreementStatus")
    billing_cycle: Ref | None = Field(default=None, alias="billingCycle")
    bill_start_date: datetime | None = Field(default=None, alias="billStartDate")
    prorate_flag: bool | None = Field(default=None, alias="prorateFlag")
    parent_agreement: Ref | None = Field(default=None, alias="parentAgreement")
    date_cancelled: datetime | None = Field(default=None, alias="dateCancelled")
    next_invoice_date: datetime | None = Field(default=None, alias="nextInvoiceDate")

    _dates = field_validator("start_date", "end_date", "bill_start_date", "date_cancelled", mode="before")(_to_datetime)
    _next = field_validator("next_invoice_date", mode="before")(_to_moment)


class Invoice(CWModel):
    """An invoice header (CW shows no lines through the API, SEMANTICS §10.2)."""

    id: int
    invoice_number: str | None = Field(default=None, alias="invoiceNumber")
    type: str | None = None
    apply_to_type: str | None = Field(default=None, alias="applyToType")
    apply_to_id: int | None = Field(default=None, alias="applyToId")
    company: Ref | None = None
    agreement: Ref | None = None
    status: Ref | None = None
    date: datetime | None = None
    due_date: datetime | None = Field(default=None, alias="dueDate")
    agreement_amount: Decimal | None = Field(default=None, alias="agreementAmount")
    subtotal: Decimal | None = None
    total: Decimal | None = None
    balance: Decimal | None = None

    _dates = field_validator("date", "due_date", mode="before")(_to_datetime)
    _money = field_validator("agreement_amount", "subtotal", "total", "balance", mode="before")(_to_decimal)


class AgreementRecap(CWModel):
    """`/finance/agreementrecap/{id}`: the agreement's last and next invoice."""

    id: int
    name: str | None = None
    agreement_status: str | None = Field(default=None, alias="agreementStatus")
    last_invoice_date: datetime | None = Field(default=None, alias="lastInvoiceDate")
    last_invoice_number: str | None = Field(default=None, alias="lastInvoiceNumber")
    last_invoice_amount: Decimal | None = Field(default=None, alias="lastInvoiceAmount")
    next_invoice_date: datetime | None = Field(default=None, alias="nextInvoiceDate")
    next_invoice_amount: Decimal | None = Field(default=None, alias="nextInvoiceAmount")
    unbilled_periods: int | None = Field(default=None, alias="unbilledPeriods")

    _dates = field_validator("last_invoice_date", "next_invoice_date", mode="before")(_to_moment)

    @field_validator("last_invoice_amount", "next_invoice_amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:  # `lastInvoiceAmount` is a string in the spec
        try:
            return _to_decimal(value)
        except ArithmeticError:
            return None


class BillingCycle(CWModel):
    id: int
    identifier: str | None = None
    name: str
    billing_options: str | None = Field(default=None, alias="billingOptions")


class CatalogItem(CWModel):
    id: int
    identifier: str
    description: str
    inactive_flag: bool | None = Field(default=None, alias="inactiveFlag")
    product_class: str | None = Field(default=None, alias="productClass")
    price: Decimal | None = None
    cost: Decimal | None = None
    subcategory: Ref | None = None
    type: Ref | None = None
    unit_of_measure: Ref | None = Field(default=None, alias="unitOfMeasure")
    customer_description: str | None = Field(default=None, alias="customerDescription")
    taxable_flag: bool | None = Field(default=None, alias="taxableFlag")

    _money = field_validator("price", "cost", mode="before")(_to_decimal)


@dataclass(frozen=True, slots=True)
class CatalogItemCreate:
    """What the service asks CW to create as the billed product (`ConnectWiseClient.create_catalog_item`)."""

    identifier: str
    description: str
    customer_description: str | None
    subcategory_id: int
    type_id: int
    unit_price: Decimal
    unit_cost: Decimal
    taxable: bool
    unit_of_measure_id: int | None = None


class Addition(CWModel):
    id: int
    product: Ref
    quantity: Decimal | None = None
    less_included: Decimal | None = Field(default=None, alias="lessIncluded")
    unit_price: Decimal | None = Field(default=None, alias="unitPrice")
    unit_cost: Decimal | None = Field(default=None, alias="unitCost")
    bill_customer: str | None = Field(default=None, alias="billCustomer")
    effective_date: datetime | None = Field(default=None, alias="effectiveDate")
    cancelled_date: datetime | None = Field(default=None, alias="cancelledDate")
    serial_number: str | None = Field(default=None, alias="serialNumber")
    invoice_description: str | None = Field(default=None, alias="invoiceDescription")
    description: str | None = None
    agreement_id: int | None = Field(default=None, alias="agreementId")
    ext_price: Decimal | None = Field(default=None, alias="extPrice")
    ext_cost: Decimal | None = Field(default=None, alias="extCost")
    info: dict[str, Any] | None = Field(default=None, alias="_info")

    _money = field_validator(
        "quantity", "less_included", "unit_price", "unit_cost", "ext_price", "ext_cost", mode="before"
    )(_to_decimal)
    _dates = field_validator("effective_date", "cancelled_date", mode="before")(_to_datetime)

    @property
    def last_updated(self) -> str | None:
        return (self.info or {}).get("lastUpdated")


class NamedItem(CWModel):
    """Categories, subcategories, product types, units of measure: what creating a product needs."""

    id: int
    name: str
    inactive_flag: bool | None = Field(default=None, alias="inactiveFlag")
    category: Ref | None = None


@dataclass(frozen=True, slots=True)
class AdditionWrite:
    """The fields of an addition this service writes, in its own types; the client turns them into CW's (numbers,
    `YYYY-MM-DDT00:00:00Z` dates). In a PATCH only the fields named in `fields` are sent."""

    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    unit_cost: Decimal | None = None
    less_included: Decimal | None = None
    effective: date | None = None
    cancelled: date | None = None
    description: str | None = None
    fields: tuple[str, ...] = (
        "quantity",
        "unit_price",
        "unit_cost",
        "less_included",
        "effective",
        "cancelled",
        "description",
    )


CW_NAMES = {
    "quantity": "quantity",
    "unit_price": "unitPrice",
    "unit_cost": "unitCost",
    "less_included": "lessIncluded",
    "effective": "effectiveDate",
    "cancelled": "cancelledDate",
    "description": "invoiceDescription",
}


def wire_value(value: Any) -> Any:
    """A value as CW takes it: Decimals as JSON numbers (whole quantities as integers), dates as midnight UTC."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    return value


def addition_body(write: AdditionWrite) -> dict[str, Any]:
    return {CW_NAMES[name]: wire_value(getattr(write, name)) for name in write.fields}
