"""The texts on invoice lines: every line explains its amount (CW's `invoiceDescription`, at most 6,000 characters)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from app.domain.billing import PeriodOwed, weight
from app.domain.money import format_money
from app.domain.periods import Period

MAX_DESCRIPTION = 6000


def format_day_range(start: date, end: date) -> str:
    """`16–30 Nov 2026`, `16 Nov–5 Dec 2026`, `16 Dec 2026–5 Jan 2027`, or `30 Nov 2026` for one day."""
    if start == end:
        return f"{start.day} {start:%b %Y}"
    if start.year != end.year:
        return f"{start.day} {start:%b %Y}–{end.day} {end:%b %Y}"
    if start.month != end.month:
        return f"{start.day} {start:%b}–{end.day} {end:%b %Y}"
    return f"{start.day}–{end.day} {end:%b %Y}"


def format_day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def period_text(period: Period) -> str:
    return format_day_range(period.start, period.end)


def licenses(n: int, *, signed: bool = True) -> str:
    sign = ("+" if n > 0 else "−") if signed else ("−" if n < 0 else "")
    return f"{sign}{abs(n)} license{'s' if abs(n) != 1 else ''}"


def proration_terms(owed: PeriodOwed) -> list[str]:
    """One term per stretch of days billed above (or, with `credit`, below) B."""
    n = owed.period.days
    price = format_money(owed.unit_price, owed.currency)
    return [
        f"{licenses(delta)} × {price} × {s.days}/{n} days ({format_day_range(s.start, s.end)})"
        for s in owed.stretches
        if (delta := weight(s.count - owed.billed_quantity, owed.policy)) != 0
    ]


def _capped(text: str, short: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else short


def proration_text(owed: PeriodOwed, label: str | None = None) -> str:
    """`+8 licenses × $3.00 × 15/30 days (16–30 Nov 2026)`; several terms end with their sum."""
    prefix = f"{label}: " if label else ""
    terms = proration_terms(owed)
    if not terms:
        return f"{prefix}No license change to prorate ({period_text(owed.period)})"
    text = "; ".join(terms)
    if len(terms) > 1:
        text += f" = {format_money(owed.prorated_amount, owed.currency)}"
    short = (
        f"{len(terms)} license changes, {owed.seat_days} seat-days × {format_money(owed.unit_price, owed.currency)}"
        f" / {owed.period.days} days ({period_text(owed.period)}) = {format_money(owed.prorated_amount, owed.currency)}"
    )
    return prefix + _capped(text, short)


def owed_formula(owed: PeriodOwed) -> str:
    """How the period's amount is made: `9 licenses × $3.00 + 8 licenses × $3.00 × 11/30 days (20–30 Nov 2026)`."""
    if not owed.active:
        return "not billed"
    parts = []
    if owed.billed_quantity:
        parts.append(f"{licenses(owed.billed_quantity, signed=False)} × {format_money(owed.unit_price, owed.currency)}")
    parts += proration_terms(owed)
    return " + ".join(parts) if parts else "no licenses"


def catch_up_text(owed: PeriodOwed, *, billed: Decimal, reported: date, label: str | None = None) -> str:
    """`Adjustment for 1–30 Nov 2026: owed $54.40 (…), billed $38.40 (reported 20 Dec 2026)`: the difference
    (after `label: ` on an agreement several portal companies share)."""
    money = owed.currency
    prefix = f"{label}: " if label else ""
    text = (
        f"{prefix}Adjustment for {period_text(owed.period)}: owed {format_money(owed.owed, money)} "
        f"({owed_formula(owed)}), billed {format_money(billed, money)} (reported {format_day(reported)})"
    )
    short = (
        f"{prefix}Adjustment for {period_text(owed.period)}: owed {format_money(owed.owed, money)}, billed "
        f"{format_money(billed, money)} (reported {format_day(reported)})"
    )
    return _capped(text, short)


def base_text(product: str, label: str | None = None) -> str:
    return f"{product} – {label}" if label else product


def delta_text(product: str, quantity: int, start: date, end: date, label: str | None = None) -> str:
    name = f"{product} – {label}" if label else product
    return f"{name}: {licenses(quantity)} ({format_day_range(start, end)}, prorated by ConnectWise)"
