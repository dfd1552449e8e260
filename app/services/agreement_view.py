"""The agreement as an MSP checks it in CW: its additions with quantity, prices, dates and explanations."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from app.connectwise.client import ConnectWiseClient
from app.db.models import Company
from app.domain.markers import company_key, parse
from app.schemas.agreement import AgreementLine, AgreementView
from app.schemas.common import money_str

Role = Literal["base", "proration", "catch_up", "delta", "other"]


def _role(serial: str | None, key: str) -> Role:
    """The line's kind when this company's marker is on it; "other" for lines it does not manage."""
    marker = parse(serial)
    if marker is None or marker.key != key:
        return "other"
    return marker.kind.value


def render_text(view: AgreementView) -> str:
    head = (
        f"Agreement '{view.agreement_name}' (#{view.agreement_id}) for {view.cw_company or '?'} — "
        f"{view.billing_cycle or '?'}, billing from {view.bill_start_date or '?'}"
        f"{', prorate on' if view.prorate else ''}"
    )
    columns = (
        f"  {'Product':<15}{'Qty':>6}{'Unit price':>12}{'Unit cost':>11}  {'Effective':<11}{'Cancelled':<11}"
        f"{'Ext. price':>11}  Line"
    )
    rows = [head, columns, "  " + "-" * (len(columns) - 2)]
    for line in view.lines:
        rows.append(
            f"  {(line.product or '?')[:15]:<15}{line.quantity:>6}{line.unit_price:>12}{line.unit_cost:>11}  "
            f"{line.effective_date or '—'!s:<11}{line.cancelled_date or '—'!s:<11}{line.ext_price:>11}  "
            f"{line.role}"
        )
        if line.role in ("proration", "catch_up", "delta") and line.invoice_description:
            rows.append(f"      {line.invoice_description}")
    if not view.lines:
        rows.append("  (no additions)")
    return "\n".join(rows) + "\n"


def _qty(value: Decimal | None) -> str:
    value = value or Decimal(0)
    return str(int(value)) if value == value.to_integral_value() else f"{value.normalize():f}"


async def agreement_view(client: ConnectWiseClient, company: Company) -> AgreementView:
    assert company.cw_agreement_id is not None  # noqa: S101 (callers check the mapping)
    key = company_key(company.id)
    agreement = await client.get_agreement(company.cw_agreement_id)
    additions = sorted(
        await client.list_additions(company.cw_agreement_id),
        key=lambda a: (a.effective_date is None, a.effective_date, a.id),
    )
    lines = [
        AgreementLine(
            addition_id=a.id,
            product=a.product.identifier,
            role=_role(a.serial_number, key),
            quantity=_qty(a.quantity),
            unit_price=money_str(a.unit_price or Decimal(0)) or "0.00",
            unit_cost=money_str(a.unit_cost or Decimal(0)) or "0.00",
            ext_price=money_str(((a.quantity or Decimal(0)) - (a.less_included or Decimal(0))) * (a.unit_price or 0))
            or "0.00",
            effective_date=a.effective_date.date() if a.effective_date else None,
            cancelled_date=a.cancelled_date.date() if a.cancelled_date else None,
            invoice_description=a.invoice_description,
        )
        for a in additions
    ]
    view = AgreementView(
        company_id=company.external_id,
        agreement_id=agreement.id,
        agreement_name=agreement.name,
        cw_company=agreement.company.name if agreement.company else None,
        billing_cycle=agreement.billing_cycle.name if agreement.billing_cycle else None,
        bill_start_date=agreement.bill_start_date.date() if agreement.bill_start_date else None,
        prorate=agreement.prorate_flag,
        lines=lines,
        text="",
    )
    return view.model_copy(update={"text": render_text(view)})
