"""Exact money: Decimal only, rounded once, half up, to the currency's minor unit."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

PRICE_PLACES = 4
_PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_PLACES)
# ISO 4217 minor units for currencies that differ from the usual 2.
_MINOR_UNITS = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "BHD": 3,
    "KWD": 3,
    "OMR": 3,
    "JOD": 3,
    "TND": 3,
}
_SYMBOLS = {"USD": "$", "AUD": "$", "CAD": "$", "NZD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-_MINOR_UNITS.get(currency.upper(), 2))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round once, half up (never banker's rounding), to the currency's minor unit."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def is_valid_price(value: Decimal) -> bool:
    """A unit price or cost: finite, not negative, at most 4 decimals, below 10^14."""
    # Magnitude before quantize: quantizing a huge value raises instead of answering.
    return value.is_finite() and 0 <= value < Decimal(10) ** 14 and value == value.quantize(_PRICE_QUANTUM)


MONEY_FIELDS = frozenset({"unit_price", "unit_cost", "price", "cost", "amount"})


def money_text(value: Decimal) -> str:
    """Money in every API answer and record: a decimal string with at least two places and more only when the value
    has them (prices keep up to 4): `3` → "3.00", `2.5` → "2.50", `3.125` → "3.125", `3.0000` → "3.00"."""
    try:
        cents = value.quantize(Decimal("0.01"))
        if value == cents:
            return f"{cents}"
    except InvalidOperation:  # beyond Decimal's precision (only ever a value read from CW): as it is
        pass
    return f"{value.normalize():f}"


def count_text(value: Decimal) -> str:
    """A quantity: `9` → "9", `9.0` → "9", `2.50` → "2.5"."""
    if value == value.to_integral_value():
        return str(int(value))
    return f"{value.normalize():f}"


def decimal_text(field: str, value: Decimal) -> str:
    """A named field's value as text: money for prices, costs and amounts, a count otherwise."""
    return money_text(value) if field in MONEY_FIELDS else count_text(value)


def format_money(amount: Decimal, currency: str, *, places: int | None = None) -> str:
    """`$3.00`, `-$1.50`, `€12.00`, `CHF 4.20`; prices keep up to 4 places, no trailing zeros past the minor unit."""
    if places is None:
        minor = -minor_unit(currency).as_tuple().exponent  # type: ignore[operator]
        normalized = amount.normalize()
        exponent = normalized.as_tuple().exponent
        places = max(minor, -exponent if isinstance(exponent, int) and exponent < 0 else 0)
    text = f"{abs(amount):,.{places}f}"
    symbol = _SYMBOLS.get(currency.upper())
    body = f"{symbol}{text}" if symbol else f"{currency.upper()} {text}"
    return f"-{body}" if amount < 0 else body
