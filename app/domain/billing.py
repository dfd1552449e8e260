"""What a billing period owes (DESIGN.md §5), from a company's timelines.

A company's billing is described by four timelines, each a pure value:

* the license **history** (`app/domain/history.py`);
* **prices**: the effective unit price and cost (the company's override, else the product default) from the day each
  was set; a period is billed at the price in force when it began, so a change applies from the next period and
  never re-rates days already past;
* **status**: whether billing applies (billing enabled, mapped, not deleted), from the day each flip happened;
* the **schedule**: which agreement bills from which day, with that agreement's cycle and anchor.

For a period P of N days, with B the count at the end of the day before P's first day:
`owed(P) = round(B × price) + round(price × Σ_d f(c(d) − B) / N)`, f = max(0, ·) (`no_credit`) or the identity
(`credit`). A company whose billing starts on day d inside P is billed like a new customer from d: B = 0 and the
days before d do not count. A company whose billing was on when P began owes all of P even if it stops during P;
after that, nothing. The `none` mode owes only the base part.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

from app.domain.history import History, Stretch
from app.domain.money import round_money
from app.domain.periods import BillingCycle, Period, period_containing


class DecreasePolicy(StrEnum):
    no_credit = "no_credit"
    credit = "credit"


class ProrationMode(StrEnum):
    line = "line"
    native = "native"
    none = "none"


# ---------------------------------------------------------------------------------------------------- prices
@dataclass(frozen=True, slots=True)
class PriceSetting:
    """A price or cost set on `day` (the tenant's local day), in the order they were made (`order`).
    `company_level` False: the product default; True: the company's override, where None means "the default"."""

    day: date
    order: int
    company_level: bool
    unit_price: Decimal | None
    unit_cost: Decimal | None


@dataclass(frozen=True, slots=True)
class Price:
    day: date  # in force from the end of this day
    unit_price: Decimal
    unit_cost: Decimal


class Prices:
    """The effective price and cost over time (override where there is one, else the product default)."""

    def __init__(self, settings: Iterable[PriceSetting]) -> None:
        default: tuple[Decimal | None, Decimal | None] = (None, None)
        override: tuple[Decimal | None, Decimal | None] = (None, None)
        merged: list[Price] = []
        for setting in sorted(settings, key=lambda s: (s.day, s.order)):
            if setting.company_level:
                override = (setting.unit_price, setting.unit_cost)
            else:
                default = (setting.unit_price, setting.unit_cost)
            price = override[0] if override[0] is not None else default[0]
            cost = override[1] if override[1] is not None else default[1]
            if price is None:
                continue
            entry = Price(setting.day, price, cost if cost is not None else Decimal(0))
            if merged and merged[-1].day == setting.day:
                merged[-1] = entry  # the last setting of a day is what stands at its end
            elif not merged or (merged[-1].unit_price, merged[-1].unit_cost) != (price, entry.unit_cost):
                merged.append(entry)
        self.entries = tuple(merged)
        self._days = [p.day for p in merged]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def at_end_of(self, day: date) -> Price | None:
        """In force at the end of `day`; before the first setting, the first one (a first period set up midway)."""
        if not self.entries:
            return None
        index = bisect.bisect_right(self._days, day)
        return self.entries[index - 1] if index else self.entries[0]

    def when_began(self, period: Period) -> Price | None:
        """In force when the period began: set before its first day."""
        return self.at_end_of(period.start - timedelta(days=1))


# ---------------------------------------------------------------------------------------------------- status
@dataclass(frozen=True, slots=True)
class StatusChange:
    day: date
    order: int
    active: bool


class Status:
    """Whether billing applies to the company, from the day of each flip."""

    def __init__(self, changes: Iterable[StatusChange]) -> None:
        self.changes = tuple(sorted(changes, key=lambda c: (c.day, c.order)))

    def active_at_end_of(self, day: date) -> bool:
        state = False
        for change in self.changes:
            if change.day > day:
                break
            state = change.active
        return state

    def active_when_began(self, period: Period) -> bool:
        return self.active_at_end_of(period.start - timedelta(days=1))

    def started_within(self, period: Period) -> date | None:
        """The first day inside the period on which billing was turned on (when it was off as the period began)."""
        for change in self.changes:
            if change.active and period.contains(change.day):
                return change.day
        return None

    def ever_active(self) -> bool:
        return any(c.active for c in self.changes)


# ---------------------------------------------------------------------------------------------------- schedule
@dataclass(frozen=True, slots=True)
class Term:
    """From `from_day` on, periods follow this cycle and anchor; `agreement_id` is who bills them (None: nobody)."""

    from_day: date
    agreement_id: int | None
    cycle: BillingCycle
    anchor: date
    ended_on: date | None = None  # the agreement ended in CW on this day: it bills no period starting later


class Schedule:
    def __init__(self, terms: Iterable[Term]) -> None:
        self.terms = tuple(sorted(terms, key=lambda t: t.from_day))
        self._days = [t.from_day for t in self.terms]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def term_on(self, day: date) -> Term | None:
        index = bisect.bisect_right(self._days, day)
        return self.terms[index - 1] if index else None

    def period_containing(self, day: date) -> Period | None:
        term = self.term_on(day)
        if term is None:
            return None
        period = period_containing(day, cycle=term.cycle, anchor=term.anchor)
        # Terms start on a period boundary (the mapping enforces it); clip defensively if one does not.
        following = bisect.bisect_right(self._days, day)
        end = period.end
        if following < len(self.terms) and self.terms[following].from_day <= end:
            end = self.terms[following].from_day - timedelta(days=1)
        return Period(max(period.start, term.from_day), end)

    def next_period(self, period: Period) -> Period | None:
        return self.period_containing(period.end + timedelta(days=1))

    def periods(self, first_day: date, last_day: date) -> list[Period]:
        """Every period with a day in [first_day, last_day], in order."""
        found: list[Period] = []
        day = first_day
        while day <= last_day:
            period = self.period_containing(day)
            if period is None:
                later = bisect.bisect_right(self._days, day)
                if later >= len(self.terms):
                    break
                day = self.terms[later].from_day
                continue
            found.append(period)
            day = period.end + timedelta(days=1)
        return found

    def agreement_for(self, period: Period) -> int | None:
        term = self.term_on(period.start)
        return term.agreement_id if term else None

    def ended(self, agreement_id: int) -> date | None:
        """The day the agreement ended in CW (cancelled or expired), as last read; None while it bills."""
        ended = [t.ended_on for t in self.terms if t.agreement_id == agreement_id and t.ended_on is not None]
        return min(ended) if ended else None

    def bills_on(self, agreement_id: int, period_start: date) -> bool:
        """Whether the agreement can still bill a period starting that day (it has not ended in CW before)."""
        ended = self.ended(agreement_id)
        return ended is None or period_start <= ended


# ---------------------------------------------------------------------------------------------------- owed
@dataclass(frozen=True, slots=True)
class PeriodOwed:
    period: Period
    agreement_id: int | None
    active: bool  # billing applies to this period at all
    new_customer_from: date | None  # billing started inside the period, on this day
    billed_quantity: int  # B
    unit_price: Decimal
    unit_cost: Decimal
    stretches: tuple[Stretch, ...]  # the counts of the days that count (from the start of billing)
    seat_days: int  # Σ f(c(d) − B)
    base_amount: Decimal  # round(B × price)
    base_cost: Decimal
    prorated_amount: Decimal  # round(price × seat_days / N); 0 in `none` mode
    prorated_cost: Decimal
    policy: DecreasePolicy
    currency: str

    @property
    def owed(self) -> Decimal:
        return self.base_amount + self.prorated_amount

    @property
    def owed_cost(self) -> Decimal:
        return self.base_cost + self.prorated_cost


def weight(delta: int, policy: DecreasePolicy) -> int:
    return delta if policy is DecreasePolicy.credit else max(0, delta)


@dataclass(frozen=True, slots=True)
class Billing:
    """A company's timelines and settings: everything `owed` needs."""

    history: History
    prices: Prices
    status: Status
    schedule: Schedule
    mode: ProrationMode
    policy: DecreasePolicy
    currency: str

    def owed(self, period: Period) -> PeriodOwed:
        """What the period owes (see the module's docstring). Native mode counts the seats above B as CW prorates
        its delta lines: each layer of added seats rounded on its own, and no credit."""
        agreement = self.schedule.agreement_for(period)
        started = None
        if self.status.active_when_began(period):
            price = self.prices.when_began(period)
            billed = self.history.count_on(period.start - timedelta(days=1))
            first_day = period.start
        else:
            started = self.status.started_within(period)
            price = self.prices.at_end_of(started) if started is not None else None
            billed, first_day = 0, started or period.start
        if price is None or (started is None and not self.status.active_when_began(period)):
            return self._nothing(period, agreement, price)
        stretches = self.history.stretches(first_day, period.end)
        days = Decimal(period.days)
        if self.mode is ProrationMode.native:
            layers = native_layers(billed, stretches, period)
            seat_days = sum(layer.quantity * layer.days for layer in layers)
            prorated = sum(
                (round_money(layer.quantity * price.unit_price * layer.days / days, self.currency) for layer in layers),
                Decimal(0),
            )
            prorated_cost = sum(
                (round_money(layer.quantity * price.unit_cost * layer.days / days, self.currency) for layer in layers),
                Decimal(0),
            )
        else:
            seat_days = sum(weight(s.count - billed, self.policy) * s.days for s in stretches)
            prorate = self.mode is ProrationMode.line
            prorated = round_money(price.unit_price * seat_days / days, self.currency) if prorate else Decimal(0)
            prorated_cost = round_money(price.unit_cost * seat_days / days, self.currency) if prorate else Decimal(0)
        return PeriodOwed(
            period=period,
            agreement_id=agreement,
            active=True,
            new_customer_from=started,
            billed_quantity=billed,
            unit_price=price.unit_price,
            unit_cost=price.unit_cost,
            stretches=stretches,
            seat_days=seat_days,
            base_amount=round_money(billed * price.unit_price, self.currency),
            base_cost=round_money(billed * price.unit_cost, self.currency),
            prorated_amount=prorated,
            prorated_cost=prorated_cost,
            policy=self.policy,
            currency=self.currency,
        )

    def _nothing(self, period: Period, agreement: int | None, price: object) -> PeriodOwed:
        zero = Decimal(0)
        return PeriodOwed(
            period=period,
            agreement_id=agreement,
            active=False,
            new_customer_from=None,
            billed_quantity=0,
            unit_price=zero,
            unit_cost=zero,
            stretches=(),
            seat_days=0,
            base_amount=zero,
            base_cost=zero,
            prorated_amount=zero,
            prorated_cost=zero,
            policy=self.policy,
            currency=self.currency,
        )

    def base_for(self, period: Period) -> tuple[int, Price] | None:
        """What the base line billing `period` should hold: (B, price), or None when nothing is billed in advance.
        Known before the period starts: B is the count at the end of the previous day, as far as the history goes."""
        if not self.status.active_when_began(period):
            return None
        price = self.prices.when_began(period)
        if price is None:
            return None
        count = self.history.count_on(period.start - timedelta(days=1))
        return (count, price) if count > 0 else None


@dataclass(frozen=True, slots=True)
class Layer:
    """Seats above the billed quantity, added on `start` and held through `end` (native mode's delta lines)."""

    quantity: int
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def native_layers(billed: int, stretches: Sequence[Stretch], period: Period) -> tuple[Layer, ...]:
    """Every increase above B opens a layer through the period's end; a decrease closes the newest layers first (from
    the day of the decrease, whose lower count holds for that whole day). At every day the open layers add up to
    max(0, c(d) − B). Layers with the same days are one line."""
    open_layers: list[tuple[int, date]] = []  # (quantity, start), newest last
    closed: list[Layer] = []
    level = billed
    for stretch in stretches:
        target = max(stretch.count, billed)
        if target > level:
            open_layers.append((target - level, stretch.start))
        while target < level and open_layers:
            quantity, start = open_layers.pop()
            take = min(quantity, level - target)
            if stretch.start > start:
                closed.append(Layer(take, start, stretch.start - timedelta(days=1)))
            if take < quantity:
                open_layers.append((quantity - take, start))
            level -= take
        level = target
    closed.extend(Layer(quantity, start, period.end) for quantity, start in open_layers)
    merged: dict[tuple[date, date], int] = {}
    for layer in closed:
        merged[(layer.start, layer.end)] = merged.get((layer.start, layer.end), 0) + layer.quantity
    return tuple(Layer(q, s, e) for (s, e), q in sorted(merged.items()))


def first_billed_day(status: Status, schedule: Schedule) -> date | None:
    """The first day billing applied with an agreement to bill it (billing that counts from before the first
    agreement term, as an adopted line's does, counts from that term's first day)."""
    if not schedule:
        return None
    for change in status.changes:
        if change.active:
            return max(change.day, schedule.terms[0].from_day)
    return None


def periods_to_account(billing: Billing, *, through: date) -> Sequence[Period]:
    """The periods from the first one billing applied in through the one containing `through`."""
    first = first_billed_day(billing.status, billing.schedule)
    if first is None:
        return []
    return billing.schedule.periods(first, through)
