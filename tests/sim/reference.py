"""A deliberately plain reference of DESIGN.md §5 ("What a period owes"), for checking the service against.

It shares no code with `app/domain`: it walks the calendar one day at a time, keeps everything in plain lists, and
takes the scenario's own record of what happened (every license change the portal reported, every price and every
start and stop of billing) rather than anything the service stored. Monthly periods starting on the 1st.

An adopted ConnectWise line (one the MSP already billed the company with) is the company's count from its
effective date until the first change; when billing starts in a period that line billed in advance, the period
counts as billed from its start, at the line's own price (the company's price applies from the next period).

    owed(P) = round(B × price) + round(price × Σ_d f(c(d) − B) / N)

B is the count at the end of the day before P; c(d) the count at the end of day d: of all changes dated on or before
d, the one with the latest day, and on that day the highest sequence. f is max(0, ·) (`no_credit`) or the identity
(`credit`). A period is billed at the price in force at the end of the day before it began (the first price when
there was none yet). When billing starts on day d of a period that did not start billed, the period is billed as for
a new customer from d: B = 0, the days before d do not count, at the price in force at the end of d. A period that
started billed is owed in full even if billing stops during it; one that neither started billed nor saw billing
start owes nothing. The `none` mode owes only round(B × price). Amounts are rounded to the cent, half up.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


@dataclass
class Truth:
    """What happened to one company, as the scenario made it happen."""

    changes: list[tuple[date, int, int]] = field(default_factory=list)  # (effective day, sequence, count)
    prices: list[tuple[date, Decimal]] = field(default_factory=list)  # (day set, effective unit price), in order
    billing: list[tuple[date, bool]] = field(default_factory=list)  # (day, billing applies from then), in order
    mode: str = "line"
    policy: str = "no_credit"
    adopted: tuple[date, int, Decimal] | None = None  # an adopted line: (effective day, billed quantity, unit price)

    def all_changes(self) -> list[tuple[date, int, int]]:
        opening = [(self.adopted[0], -1, self.adopted[1])] if self.adopted else []
        return opening + self.changes

    def adopted_start(self) -> tuple[date, Decimal] | None:
        """When billing first starts in a period the adopted line billed: (that period's first day, its price)."""
        if self.adopted is None:
            return None
        starts = [on for on, applies in self.billing if applies]
        if not starts:
            return None
        period_start = month_of(starts[0])[0]
        return (period_start, self.adopted[2]) if self.adopted[0] <= period_start else None


def month_of(day: date) -> tuple[date, date]:
    last = calendar.monthrange(day.year, day.month)[1]
    return date(day.year, day.month, 1), date(day.year, day.month, last)


def count_at_end_of(truth: Truth, day: date) -> int:
    best = None
    for change_day, sequence, count in truth.all_changes():
        if change_day <= day and (best is None or (change_day, sequence) > (best[0], best[1])):
            best = (change_day, sequence, count)
    return best[2] if best is not None else 0


def price_at_end_of(truth: Truth, day: date) -> Decimal | None:
    adopted = truth.adopted_start()
    if adopted is not None and day == adopted[0] - timedelta(days=1):
        return adopted[1]  # the adopted line's price billed the period it was adopted in
    found = None
    for set_on, price in truth.prices:
        if set_on <= day:
            found = price
    if found is None and truth.prices:
        found = truth.prices[0][1]
    return found


def billed_at_end_of(truth: Truth, day: date) -> bool:
    adopted = truth.adopted_start()
    events = list(truth.billing)
    if adopted is not None:  # billing counts from the start of the period the adopted line billed
        first = next(i for i, (_, applies) in enumerate(events) if applies)
        events[first] = (adopted[0] - timedelta(days=1), True)
    state = False
    for on, applies in events:
        if on <= day:
            state = applies
    return state


def owed(truth: Truth, month_start: date) -> Decimal:
    start, end = month_of(month_start)
    days_in_period = (end - start).days + 1
    day_before = start - timedelta(days=1)
    if billed_at_end_of(truth, day_before):
        first_day = start
        billed = count_at_end_of(truth, day_before)
        price = price_at_end_of(truth, day_before)
    else:
        starts = [on for on, applies in truth.billing if applies and start <= on <= end]
        if not starts:
            return Decimal(0)
        first_day = starts[0]
        billed = 0
        price = price_at_end_of(truth, first_day)
    if price is None:
        return Decimal(0)
    base = (billed * price).quantize(CENT, rounding=ROUND_HALF_UP)
    if truth.mode == "none":
        return base
    seat_days = 0
    day = first_day
    while day <= end:
        delta = count_at_end_of(truth, day) - billed
        seat_days += delta if truth.policy == "credit" else max(0, delta)
        day += timedelta(days=1)
    prorated = (price * seat_days / days_in_period).quantize(CENT, rounding=ROUND_HALF_UP)
    return base + prorated


def owed_through(truth: Truth, first_month: date, last_month: date) -> Decimal:
    """Σ owed over the months from `first_month` through `last_month` (both given by any day in them)."""
    total = Decimal(0)
    month = month_of(first_month)[0]
    while month <= last_month:
        total += owed(truth, month)
        month = month_of(month)[1] + timedelta(days=1)
    return total
