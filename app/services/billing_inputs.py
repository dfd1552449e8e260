"""From stored rows to the planner's inputs (shared by the preview, the charges view and the sync worker)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import BillingProduct, Company, LicenseChange, Tenant
from app.domain.periods import BillingCycle
from app.domain.plan import AdditionFields, BillingInputs
from app.domain.pricing import EffectivePrice, resolve_price
from app.domain.proration import CountChange, DecreasePolicy, ProrationMode, local_day
from app.errors import ConflictError

MONEY_FIELDS = ("quantity", "unit_price", "unit_cost", "less_included")
DATE_FIELDS = ("effective_date", "cancelled_date")


class NotReadyError(ConflictError):
    code = "not_ready"
    title = "The company cannot be billed yet"


def effective_price(company: Company, product: BillingProduct | None) -> EffectivePrice:
    """The company's override where it has one, else the product's default."""
    return resolve_price(
        price_override=company.unit_price_override,
        cost_override=company.unit_cost_override,
        default_price=product.unit_price if product else None,
        default_cost=product.unit_cost if product else None,
    )


def marker_prefix(company: Company) -> str:
    return f"cwbs:{company.id.replace('-', '')}:"


async def ledger(session: AsyncSession, company: Company, *, include_ignored: bool = False) -> list[LicenseChange]:
    """The company's license changes in the portal's order; stale or ignored ones only when asked for."""
    statement = select(LicenseChange).where(LicenseChange.company_id == company.id)
    if not include_ignored:
        statement = statement.where(LicenseChange.ignored_reason.is_(None))
    return list(await session.scalars(statement.order_by(LicenseChange.sequence, LicenseChange.id)))


def count_changes(rows: list[LicenseChange], timezone: str) -> tuple[tuple[CountChange, ...], int]:
    """The ledger as the domain sees it, and the count before its first change."""
    changes = tuple(CountChange(local_day(r.effective_at, timezone), r.license_count, r.sequence or r.id) for r in rows)
    opening = rows[0].previous_count or 0 if rows else 0
    return changes, opening


async def load_inputs(
    session: AsyncSession,
    *,
    tenant: Tenant,
    company: Company,
    now: datetime,
    extra: CountChange | None = None,
    license_count: int | None = None,
) -> BillingInputs:
    if company.cw_agreement_id is None or company.billing_cycle is None or company.bill_start_date is None:
        raise NotReadyError(f"Company {company.external_id} is not mapped to an agreement yet")
    product = await session.get(BillingProduct, tenant.id)
    if product is None:
        raise NotReadyError("No product is mapped yet")
    price = effective_price(company, product)
    changes, opening = count_changes(await ledger(session, company), tenant.timezone)
    if extra is not None:
        changes = (*changes, extra)
    return BillingInputs(
        cycle=BillingCycle(company.billing_cycle),
        anchor=company.bill_start_date,
        today=local_day(now, tenant.timezone),
        mode=ProrationMode(tenant.proration_mode),
        policy=DecreasePolicy(tenant.decrease_policy),
        currency=tenant.currency,
        unit_price=price.unit_price or Decimal(0),
        unit_cost=price.unit_cost or Decimal(0),
        product_description=product.description or product.identifier,
        license_count=company.license_count if license_count is None else license_count,
        changes=changes,
        opening_count=opening,
        marker_prefix=marker_prefix(company),
    )


def fields_to_json(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Decimal):
            out[key] = str(value)
        elif isinstance(value, date):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def fields_from_json(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in MONEY_FIELDS and value is not None:
            out[key] = Decimal(str(value))
        elif key in DATE_FIELDS and value is not None:
            out[key] = date.fromisoformat(value[:10])
        else:
            out[key] = value
    return out


def fields_payload(fields: dict[str, Any]) -> dict[str, Any]:
    """Managed fields in CW's names and JSON types (dates as midnight UTC)."""
    names = {
        "quantity": "quantity",
        "unit_price": "unitPrice",
        "unit_cost": "unitCost",
        "less_included": "lessIncluded",
        "effective_date": "effectiveDate",
        "cancelled_date": "cancelledDate",
        "invoice_description": "invoiceDescription",
    }
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() and key == "quantity" else float(value)
        elif isinstance(value, date):
            value = f"{value.isoformat()}T00:00:00Z"
        out[names[key]] = value
    return out


def current_fields(addition: Any) -> dict[str, Any]:
    """What CW holds, in the planner's terms."""
    return {
        "quantity": addition.quantity if addition.quantity is not None else Decimal(0),
        "unit_price": addition.unit_price if addition.unit_price is not None else Decimal(0),
        "unit_cost": addition.unit_cost if addition.unit_cost is not None else Decimal(0),
        "less_included": addition.less_included if addition.less_included is not None else Decimal(0),
        "effective_date": addition.effective_date.date() if addition.effective_date else None,
        "cancelled_date": addition.cancelled_date.date() if addition.cancelled_date else None,
        "invoice_description": addition.invoice_description,
    }


def same_fields(a: AdditionFields | dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> bool:
    mine = a.as_dict() if isinstance(a, AdditionFields) else a
    return all(fields_to_json({k: mine.get(k)}) == fields_to_json({k: b.get(k)}) for k in keys if k in mine)
