"""Does an invoice line explain its amount? Read as a customer reads it — the text and the numbers on the line —
with no code from `app/` (this is a second, independent reading of the texts DESIGN §5 asks for)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

_MONEY = r"(-?)\$([\d,]+(?:\.\d+)?)"
_TERM = re.compile(r"([+−])(\d+) licenses? × " + r"\$([\d,]+(?:\.\d+)?)" + r" × (\d+)/(\d+) days")
_TOTAL = re.compile(r" = " + _MONEY + r"$")
_SHORT = re.compile(r"(\d+) seat-days × \$([\d,]+(?:\.\d+)?) / (\d+) days .* = " + _MONEY + r"$")
_CATCH_UP = re.compile(
    r"^(?:[^:]+: )?Adjustment for .+?: owed " + _MONEY + r" .*billed " + _MONEY + r" \(reported \d+ \w+ \d{4}\)$"
)


def _money(sign: str, digits: str) -> Decimal:
    value = Decimal(digits.replace(",", ""))
    return -value if sign else value


def _number(digits: str) -> Decimal:
    return Decimal(digits.replace(",", ""))


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def why_unexplained(kind: str, description: str, amount: Decimal, quantity: Decimal, unit_price: Decimal) -> str | None:
    """None when the line's text accounts for its amount; otherwise what does not add up."""
    text = description or ""
    if kind == "base":
        if not text.strip():
            return "a base line without a text"
        if _cents(quantity * unit_price) != amount:
            return f"{quantity} × {unit_price} is not {amount}"
        return None
    if kind == "proration":
        terms = _TERM.findall(text)
        if terms:
            total = sum(
                (
                    (-1 if sign == "−" else 1) * Decimal(n) * _number(price) * Decimal(d) / Decimal(days)
                    for sign, n, price, d, days in terms
                ),
                Decimal(0),
            )
            if _cents(total) != amount:
                return f"the terms of {text!r} make {_cents(total)}, the line bills {amount}"
            stated = _TOTAL.search(text)
            if len(terms) > 1 and (stated is None or _money(*stated.groups()) != amount):
                return f"{text!r} does not state its sum {amount}"
            return None
        short = _SHORT.search(text)
        if short:
            seat_days, price, days, sign, stated_total = short.groups()
            computed = _cents(Decimal(seat_days) * Decimal(price.replace(",", "")) / Decimal(days))
            return None if computed == amount == _money(sign, stated_total) else f"{text!r} does not make {amount}"
        return f"a proration line whose text has no formula: {text!r}"
    if kind == "catch_up":
        match = _CATCH_UP.match(text)
        if match is None:
            return f"a catch-up line whose text says no owed and billed amounts: {text!r}"
        owed_sign, owed, billed_sign, billed = match.groups()
        if _money(owed_sign, owed) - _money(billed_sign, billed) != amount:
            return f"{text!r}: owed − billed is not {amount}"
        return None
    return None  # native delta lines: ConnectWise's own proration, explained by its dates
