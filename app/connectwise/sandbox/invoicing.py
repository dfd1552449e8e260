"""Agreement invoicing as the sandbox models ConnectWise's (SEMANTICS.md §10.8, "model for a fake").

`POST /finance/agreements/{id}/invoice` bills the earliest unbilled period of the agreement whose first day is not in
the future, in advance: every addition active on the period's first day for one full period, and — on an agreement
with `prorateFlag` — the days of an addition's range that fall in periods it has not been charged for yet (its
partial first period, and periods invoiced before it existed), pro rata. Nothing already charged is billed again or
credited. Deleting an invoice reopens its period.

Where §10.8 marks a rule *assumed*, it sits in one small function below whose name says what it decides, so that it
can change in one place when evidence arrives. The period arithmetic is the sandbox's own (it shares no code with the
service's `app/domain`), so that the service's periods are checked against an independent reading of the rules.

Besides each invoice the sandbox keeps which additions it billed and for how much (`lines`) — real ConnectWise shows
no such thing (§10.2); tests read it to attribute every cent, the service never does.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.connectwise.sandbox.store import SandboxError, SandboxStore, cw_text, day_of

CENT = Decimal("0.01")
_MONTH_STEPS = {"Monthly": 1, "BiMonthly": 2, "Quarterly": 3, "SemiAnnual": 6, "Yearly": 12}
_DAY_STEPS = {"Weekly": 7, "BiWeekly": 14}


@dataclass(frozen=True, slots=True)
class Span:
    """One billing period of an agreement, both ends included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def _months_after(anchor: date, months: int) -> date:
    year, month = divmod(anchor.year * 12 + anchor.month - 1 + months, 12)
    return date(year, month + 1, min(anchor.day, calendar.monthrange(year, month + 1)[1]))


def periods(billing_options: str, anchor: date) -> Iterator[Span]:
    """The agreement's periods from its bill start date on: month-based cycles start on the anchor's day of month
    (29–31 clamped to shorter months), weekly ones every 7 or 14 days."""
    index = 0
    while True:
        if billing_options in _MONTH_STEPS:
            step = _MONTH_STEPS[billing_options]
            start, following = _months_after(anchor, index * step), _months_after(anchor, (index + 1) * step)
        else:
            step = _DAY_STEPS[billing_options]
            start, following = anchor + timedelta(days=index * step), anchor + timedelta(days=(index + 1) * step)
        yield Span(start, following - timedelta(days=1))
        index += 1


# ---------------------------------------------------------------------------- the assumed rules (§10.8)
def due_period(open_periods: list[Span], today: date) -> Span | None:
    """Assumed: one call bills the earliest unbilled period whose first day is not in the future."""
    return open_periods[0] if open_periods and open_periods[0].start <= today else None


def bills_full_period(addition: dict[str, Any], period: Span) -> bool:
    """Sourced in advance; assumed: active on the period's first day means one full period, even when the addition
    is cancelled later in it."""
    effective, cancelled = day_of(addition.get("effectiveDate")), day_of(addition.get("cancelledDate"))
    return effective is not None and effective <= period.start and (cancelled is None or cancelled >= period.start)


def billed_quantity(addition: dict[str, Any]) -> Decimal:
    """Sourced: quantity × unit price; assumed: less what the agreement already includes (`lessIncluded`)."""
    return _dec(addition.get("quantity")) - _dec(addition.get("lessIncluded"))


def prorated_amount(quantity: Decimal, unit_price: Decimal, days: int, period_days: int) -> Decimal:
    """Days counted inclusive (derived from one worked example); assumed: each period's part rounded to cents."""
    return _cents(quantity * unit_price * days / period_days)


def full_amount(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """Assumed: a line's full-period charge is rounded to cents, half up."""
    return _cents(quantity * unit_price)


def printed_amount(bill_customer: str | None, amount: Decimal) -> Decimal | None:
    """Assumed: `NoCharge` prints at zero, `DoNotBill` is left off the invoice (None); `Billable` is charged."""
    if bill_customer == "DoNotBill":
        return None
    return Decimal(0) if bill_customer == "NoCharge" else amount


def invoice_header_amounts(bill_amount: Decimal, lines_total: Decimal) -> dict[str, float]:
    """Assumed: the whole agreement amount is `agreementAmount`; no products, services, expenses or tax."""
    total = float(bill_amount + lines_total)
    return {
        "agreementAmount": total,
        "productTotal": 0.0,
        "serviceTotal": 0.0,
        "expenseTotal": 0.0,
        "salesTax": 0.0,
        "subtotal": total,
        "total": total,
        "balance": total,
        "payments": 0.0,
        "credits": 0.0,
    }


PRORATE_NOTE = "This item has been prorated with a start date of: {month}/{day}/{year}"


# ---------------------------------------------------------------------------- invoices
@dataclass(slots=True)
class InvoiceLine:
    """What one invoice billed for one addition (sandbox-only)."""

    addition_id: int
    product_id: int | None
    serial_number: str | None
    description: str | None
    bill_customer: str | None
    quantity: Decimal
    unit_price: Decimal
    full_amount: Decimal
    prorated_amount: Decimal
    amount: Decimal
    periods: tuple[date, ...]  # the periods this line charged (in full or pro rata)
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "additionId": self.addition_id,
            "productId": self.product_id,
            "serialNumber": self.serial_number,
            "description": self.description,
            "billCustomer": self.bill_customer,
            "quantity": str(self.quantity),
            "unitPrice": str(self.unit_price),
            "fullAmount": str(self.full_amount),
            "proratedAmount": str(self.prorated_amount),
            "amount": str(self.amount),
            "periods": [p.isoformat() for p in self.periods],
            "note": self.note,
        }


@dataclass(slots=True)
class InvoiceRecord:
    invoice_id: int
    agreement_id: int
    period: Span
    lines: list[InvoiceLine]


@dataclass
class AgreementInvoicing:
    """The invoices of one sandbox and what each charged, per addition and period."""

    store: SandboxStore
    records: dict[int, InvoiceRecord] = field(default_factory=dict)
    # addition id -> period start -> the invoice that charged it
    charged: dict[int, dict[date, int]] = field(default_factory=dict)

    # ------------------------------------------------------------------ periods
    def schedule(self, agreement: dict[str, Any]) -> tuple[str, date] | None:
        options = self.store.cycle_of(agreement)
        anchor = day_of(agreement.get("billStartDate")) or day_of(agreement.get("startDate"))
        if options is None or anchor is None or (options not in _MONTH_STEPS and options not in _DAY_STEPS):
            return None
        return options, anchor

    def _last_billable_day(self, agreement: dict[str, Any]) -> date | None:
        """No period starting after the agreement ended (its end date, or the day it was cancelled) is billed."""
        ends = []
        if agreement.get("cancelledFlag"):
            ends.append(day_of(agreement.get("dateCancelled")) or self.store.today())
        end = day_of(agreement.get("endDate"))
        if end is not None and not agreement.get("noEndingDateFlag"):
            ends.append(end)
        return min(ends) if ends else None

    def open_periods(self, agreement: dict[str, Any], *, through: date | None, limit: int | None = None) -> list[Span]:
        """Unbilled periods starting on or before `through` (None: any day) and before the agreement ended, oldest
        first, at most `limit` of them."""
        schedule = self.schedule(agreement)
        if schedule is None:
            return []
        billed = {r.period.start for r in self.records.values() if r.agreement_id == agreement["id"]}
        last = self._last_billable_day(agreement)
        found: list[Span] = []
        for period in periods(*schedule):
            if (through is not None and period.start > through) or (last is not None and period.start > last):
                return found
            if period.start not in billed:
                found.append(period)
                if limit is not None and len(found) >= limit:
                    return found
        raise AssertionError("unreachable: periods() never ends")  # pragma: no cover

    def period_of(self, agreement: dict[str, Any], day: date) -> Span | None:
        schedule = self.schedule(agreement)
        if schedule is None or day < schedule[1]:
            return None
        for period in periods(*schedule):
            if period.end >= day:
                return period
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ billing one period
    def _lines(self, agreement: dict[str, Any], period: Span) -> list[InvoiceLine]:
        schedule = self.schedule(agreement)
        assert schedule is not None  # noqa: S101 (open_periods found a period)
        prorate = bool(agreement.get("prorateFlag"))
        additions = sorted(
            self.store.additions_of(agreement["id"]),
            key=lambda a: (float(a.get("sequenceNumber") or 0), a["id"]),
        )
        lines: list[InvoiceLine] = []
        for addition in additions:
            quantity, price = billed_quantity(addition), _dec(addition.get("unitPrice"))
            done = self.charged.get(addition["id"], {})
            charged: list[date] = []
            full = Decimal(0)
            if bills_full_period(addition, period) and period.start not in done:
                full = full_amount(quantity, price)
                charged.append(period.start)
            prorated = Decimal(0)
            effective = day_of(addition.get("effectiveDate"))
            if prorate and effective is not None:
                cancelled = day_of(addition.get("cancelledDate"))
                last = min(cancelled, period.end) if cancelled is not None else period.end
                first = max(effective, schedule[1])
                for earlier in periods(*schedule):
                    if earlier.start > last:
                        break
                    if earlier.end < first or earlier.start in done or earlier.start in charged:
                        continue
                    days = (min(last, earlier.end) - max(first, earlier.start)).days + 1
                    prorated += prorated_amount(quantity, price, days, earlier.days)
                    charged.append(earlier.start)
            if not charged:
                continue
            amount = printed_amount(addition.get("billCustomer"), full + prorated)
            if amount is None:
                continue
            note = None
            if prorate and not done and effective is not None:
                note = PRORATE_NOTE.format(month=effective.month, day=effective.day, year=effective.year)
            lines.append(
                InvoiceLine(
                    addition_id=addition["id"],
                    product_id=(addition.get("product") or {}).get("id"),
                    serial_number=addition.get("serialNumber"),
                    description=addition.get("invoiceDescription"),
                    bill_customer=addition.get("billCustomer"),
                    quantity=quantity,
                    unit_price=price,
                    full_amount=full if amount else Decimal(0),
                    prorated_amount=prorated if amount else Decimal(0),
                    amount=amount,
                    periods=tuple(sorted(charged)),
                    note=note,
                )
            )
        return lines

    def invoice(self, agreement_id: int) -> int:
        """Bill the agreement's due period; the new invoice's id. Nothing due is CW's 400."""
        agreement = self.store.agreements.get(agreement_id)
        if self.schedule(agreement) is None:
            raise SandboxError(400, "InvalidObject", f"Agreement {agreement_id} is not a recurring agreement.")
        today = self.store.today()
        period = due_period(self.open_periods(agreement, through=today, limit=1), today)
        if period is None:
            raise SandboxError(
                400,
                "InvalidObject",
                f"There is no billing period to invoice for agreement {agreement_id} yet.",
            )
        lines = self._lines(agreement, period)
        invoice = self.store.invoices.insert(self._header(agreement, period, lines))
        self.records[invoice["id"]] = InvoiceRecord(invoice["id"], agreement_id, period, lines)
        for line in lines:
            for start in line.periods:
                self.charged.setdefault(line.addition_id, {})[start] = invoice["id"]
        self.store.writes += 1
        return int(invoice["id"])

    def _company(self, agreement: dict[str, Any]) -> dict[str, Any]:
        """The agreement's company as a reference, its identifier and name from the company record."""
        ref = agreement.get("company") or {}
        company_id = ref.get("id")
        record = self.store.companies.rows.get(company_id) if isinstance(company_id, int) else None
        merged = {**ref, **{k: record[k] for k in ("identifier", "name") if record and k in record}}
        return {k: merged[k] for k in ("id", "identifier", "name") if merged.get(k) is not None}

    def _header(self, agreement: dict[str, Any], period: Span, lines: list[InvoiceLine]) -> dict[str, Any]:
        company = self._company(agreement)
        return {
            "invoiceNumber": f"A{self.store.invoices.next_id:06d}",
            "type": "Agreement",
            "applyToType": "Agreement",
            "applyToId": agreement["id"],
            "status": {"id": 1, "name": "New", "isClosed": False},
            "company": company,
            "billToCompany": company,
            "agreement": {"id": agreement["id"], "name": agreement.get("name"), "chargeFirmFlag": False},
            "date": f"{period.start.isoformat()}T00:00:00Z",
            "dueDate": f"{(period.start + timedelta(days=30)).isoformat()}T00:00:00Z",
            **invoice_header_amounts(_dec(agreement.get("billAmount")), sum((li.amount for li in lines), Decimal(0))),
        }

    def delete(self, invoice_id: int) -> None:
        """Deleting an agreement invoice reopens its period: what it charged is unbilled again."""
        self.store.invoices.get(invoice_id)
        record = self.records.pop(invoice_id, None)
        del self.store.invoices.rows[invoice_id]
        if record is not None:
            for line in record.lines:
                done = self.charged.get(line.addition_id, {})
                for start in line.periods:
                    if done.get(start) == invoice_id:
                        del done[start]
        self.store.writes += 1

    # ------------------------------------------------------------------ an addition's prorated fields
    def prorate_fields(self, addition: dict[str, Any]) -> dict[str, float]:
        """§10.5: on a prorated agreement, an addition starting mid-period shows the prorated price of that first
        partial period (per unit and extended). Assumed: the same arithmetic as its first invoice, rounded to cents."""
        agreement = self.store.agreements.rows.get(addition.get("agreementId"))  # type: ignore[arg-type]
        effective = day_of(addition.get("effectiveDate"))
        if agreement is None or not agreement.get("prorateFlag") or effective is None:
            return {}
        period = self.period_of(agreement, effective)
        if period is None or period.start == effective:
            return {}
        cancelled = day_of(addition.get("cancelledDate"))
        last = min(cancelled, period.end) if cancelled is not None else period.end
        days = max(0, (last - effective).days + 1)
        quantity = billed_quantity(addition)
        price, cost = _dec(addition.get("unitPrice")), _dec(addition.get("unitCost"))
        return {
            "proratePrice": float(prorated_amount(Decimal(1), price, days, period.days)),
            "extendedProratePrice": float(prorated_amount(quantity, price, days, period.days)),
            "prorateCost": float(prorated_amount(Decimal(1), cost, days, period.days)),
            "extendedProrateCost": float(prorated_amount(quantity, cost, days, period.days)),
        }

    # ------------------------------------------------------------------ recap
    def next_invoice_date(self, agreement: dict[str, Any]) -> date | None:
        """The first day of the next unbilled period (at any date), None when nothing more will be billed."""
        upcoming = self.open_periods(agreement, through=None, limit=1)
        return upcoming[0].start if upcoming else None

    def recap(self, agreement: dict[str, Any]) -> dict[str, Any]:
        """Assumed (§10.8): last invoice from the newest agreement invoice, next invoice date and amount from the next
        unbilled period, unbilled periods = those due now; the allowance fields are zero."""
        today = self.store.today()
        mine = sorted(
            (r for r in self.records.values() if r.agreement_id == agreement["id"]), key=lambda r: r.invoice_id
        )
        due = self.open_periods(agreement, through=today)
        next_start = self.next_invoice_date(agreement)
        recap: dict[str, Any] = {
            "id": agreement["id"],
            "name": agreement.get("name"),
            "companyName": self._company(agreement).get("name"),
            "agreementStatus": self.store.agreement_status(agreement),
            "unbilledPeriods": len(due),
            "startingAmount": 0.0,
            "adjustmentAmount": 0.0,
            "usedAmount": 0.0,
            "remainingAmount": 0.0,
            "overrunAmount": 0.0,
            "availableAmount": 0.0,
            "unbilledOverageAmount": 0.0,
            "isUnlimited": "False",
        }
        if mine:
            newest = self.store.invoices.rows[mine[-1].invoice_id]
            recap.update(
                lastInvoiceDate=newest["date"],
                lastInvoiceNumber=newest["invoiceNumber"],
                lastInvoiceAmount=f"{Decimal(str(newest['total'])):.2f}",
            )
        if next_start is not None:
            recap["nextInvoiceDate"] = f"{next_start.isoformat()}T00:00:00Z"
            period = self.period_of(agreement, next_start)
            if period is not None:
                preview = self._lines(agreement, period)
                total = _dec(agreement.get("billAmount")) + sum((li.amount for li in preview), Decimal(0))
                recap["nextInvoiceAmount"] = float(total)
        return {k: v for k, v in recap.items() if v is not None}  # CW's serializer omits nulls

    def render_agreement(self, agreement: dict[str, Any]) -> dict[str, Any]:
        out = dict(agreement)
        out["agreementStatus"] = self.store.agreement_status(agreement)
        next_start = self.next_invoice_date(agreement)
        if next_start is not None:
            out["nextInvoiceDate"] = f"{next_start.isoformat()}T00:00:00Z"
        return out

    def lines(self, invoice_id: int) -> list[InvoiceLine]:
        self.store.invoices.get(invoice_id)
        record = self.records.get(invoice_id)
        return list(record.lines) if record else []

    def billed_for(self, *, agreement_id: int | None = None, product_id: int | None = None) -> Decimal:
        """Sandbox-only: the sum of every invoice line (of one agreement, of one product)."""
        return sum(
            (
                line.amount
                for record in self.records.values()
                if agreement_id is None or record.agreement_id == agreement_id
                for line in record.lines
                if product_id is None or line.product_id == product_id
            ),
            Decimal(0),
        )


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


__all__ = ["AgreementInvoicing", "InvoiceLine", "Span", "cw_text", "periods"]
