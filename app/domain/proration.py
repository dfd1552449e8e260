"""Seat-day proration of license changes within a billing period (DESIGN.md §5).

Counts: the count in force at the end of a day counts for that whole day. Among several changes, the one with the
highest `order` (the portal's per-company sequence) that is effective on or before a day decides that day's count,
so two changes on one day count only the later one, and the newest statement from the portal always wins.

With B the quantity billed for the period (the count in force when it started) and c(d) the count at the end of
day d, the period's prorated amount is `Σ_d w(c(d) − B) × unit_price / N`, rounded once, where w is the identity
(`credit`) or max(0, ·) (`no_credit`). For one change q0 → q1 on day d this is `(q1 − q0) × price × R / N`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from app.domain.money import format_money, round_money
from app.domain.periods import Period

MAX_DESCRIPTION = 6000  # CW's invoiceDescription limit


class DecreasePolicy(StrEnum):
    no_credit = "no_credit"
    credit = "credit"


class ProrationMode(StrEnum):
    line = "line"
    native = "native"
    none = "none"


@dataclass(frozen=True, slots=True)
class CountChange:
    day: date
    count: int
    order: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Days `start`..`end` (inclusive) on which the count at the end of the day was `count`."""

    start: date
    end: date
    count: int

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True, slots=True)
class Layer:
    """Seats above the billed quantity, added on `start` and held through `end` (native mode's delta lines)."""

    quantity: int
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True, slots=True)
class PeriodCharge:
    period: Period
    billed_quantity: int
    final_count: int
    segments: tuple[Segment, ...]
    seat_days: int
    unit_price: Decimal
    unit_cost: Decimal
    amount: Decimal
    cost_amount: Decimal
    policy: DecreasePolicy
    currency: str

    @property
    def changed(self) -> bool:
        return any(s.count != self.billed_quantity for s in self.segments)


def local_day(moment: datetime, timezone: str) -> date:
    """The calendar day of `moment` in the tenant's timezone ("which day did it change")."""
    if moment.tzinfo is None:
        raise ValueError("effective_at must be timezone-aware")
    return moment.astimezone(ZoneInfo(timezone)).date()


def _running_count(changes: Iterable[CountChange], opening: int) -> tuple[int, int | None]:
    best: CountChange | None = None
    for change in changes:
        if best is None or change.order > best.order:
            best = change
    return (best.count, best.order) if best else (opening, None)


def count_on(day: date, changes: Sequence[CountChange], opening: int) -> int:
    """The count in force at the end of `day`."""
    return _running_count((c for c in changes if c.day <= day), opening)[0]


def segments_for(period: Period, changes: Sequence[CountChange], opening: int) -> tuple[int, tuple[Segment, ...]]:
    """(B, segments covering the whole period) for a period, given every change of the company."""
    ordered = sorted(changes, key=lambda c: (c.day, c.order))
    before = [c for c in ordered if c.day < period.start]
    best_count, best_order = _running_count(before, opening)
    billed = best_count
    inside = [c for c in ordered if period.contains(c.day)]
    change_days = sorted({c.day for c in inside})
    segments: list[Segment] = []
    cursor, current = period.start, billed
    for day in change_days:
        for change in (c for c in inside if c.day == day):
            if best_order is None or change.order > best_order:
                best_count, best_order = change.count, change.order
        if best_count == current:
            continue
        if day > cursor:
            segments.append(Segment(cursor, day - timedelta(days=1), current))
        cursor, current = day, best_count
    segments.append(Segment(cursor, period.end, current))
    return billed, tuple(segments)


def _weight(delta: int, policy: DecreasePolicy) -> int:
    return delta if policy is DecreasePolicy.credit else max(0, delta)


def period_charge(
    *,
    period: Period,
    changes: Sequence[CountChange],
    opening_count: int,
    unit_price: Decimal,
    unit_cost: Decimal,
    policy: DecreasePolicy,
    currency: str,
) -> PeriodCharge:
    billed, segments = segments_for(period, changes, opening_count)
    seat_days = sum(_weight(s.count - billed, policy) * s.days for s in segments)
    n = Decimal(period.days)
    return PeriodCharge(
        period=period,
        billed_quantity=billed,
        final_count=segments[-1].count,
        segments=segments,
        seat_days=seat_days,
        unit_price=unit_price,
        unit_cost=unit_cost,
        amount=round_money(seat_days * unit_price / n, currency),
        cost_amount=round_money(seat_days * unit_cost / n, currency),
        policy=policy,
        currency=currency,
    )


def native_layers(period: Period, changes: Sequence[CountChange], opening: int) -> tuple[Layer, ...]:
    """Delta lines for CW's own proration: every increase above B opens a layer through the period end; a decrease
    closes the newest layers first (the day before it, since the lower count holds for the day of the change).
    At every day the open layers add up to max(0, c(d) − B), so their seat-days equal the `no_credit` amount."""
    billed, segments = segments_for(period, changes, opening)
    open_layers: list[tuple[int, date]] = []  # (quantity, start), newest last
    closed: list[Layer] = []
    level = billed
    for segment in segments:
        target = max(segment.count, billed)
        if target > level:
            open_layers.append((target - level, segment.start))
        while target < level and open_layers:
            quantity, start = open_layers.pop()
            take = min(quantity, level - target)
            if segment.start > start:
                closed.append(Layer(take, start, segment.start - timedelta(days=1)))
            if take < quantity:
                open_layers.append((quantity - take, start))
            level -= take
        level = target
    closed.extend(Layer(quantity, start, period.end) for quantity, start in open_layers)
    return tuple(sorted(closed, key=lambda layer: (layer.start, layer.end, layer.quantity)))


def format_day_range(start: date, end: date) -> str:
    """`16–30 Nov 2026`, `16 Nov–5 Dec 2026`, `16 Dec 2026–5 Jan 2027`, or `30 Nov 2026` for one day."""
    if start == end:
        return f"{start.day} {start:%b %Y}"
    if start.year != end.year:
        return f"{start.day} {start:%b %Y}–{end.day} {end:%b %Y}"
    if start.month != end.month:
        return f"{start.day} {start:%b}–{end.day} {end:%b %Y}"
    return f"{start.day}–{end.day} {end:%b %Y}"


def _licenses(n: int) -> str:
    sign = "+" if n > 0 else "−"
    return f"{sign}{abs(n)} license{'s' if abs(n) != 1 else ''}"


def charge_description(charge: PeriodCharge) -> str:
    """The invoice line that explains the amount: one term per stretch of days billed above (or below) B."""
    n = charge.period.days
    price = format_money(charge.unit_price, charge.currency)
    terms = [
        f"{_licenses(delta)} × {price} × {s.days}/{n} days ({format_day_range(s.start, s.end)})"
        for s in charge.segments
        if (delta := _weight(s.count - charge.billed_quantity, charge.policy)) != 0
    ]
    if not terms:
        return f"No license change to prorate ({format_day_range(charge.period.start, charge.period.end)})"
    text = "; ".join(terms)
    if len(terms) > 1:
        text += f" = {format_money(charge.amount, charge.currency)}"
    if len(text) > MAX_DESCRIPTION:
        text = (
            f"{len(terms)} license changes, {charge.seat_days} seat-days × {price} / {n} days "
            f"({format_day_range(charge.period.start, charge.period.end)}) = "
            f"{format_money(charge.amount, charge.currency)}"
        )
    return text
