"""Properties of periods and proration, each over at least 2,000 generated cases."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.money import minor_unit, round_money
from app.domain.periods import BillingCycle, Period, next_period, period_containing
from app.domain.proration import CountChange, DecreasePolicy, count_on, native_layers, period_charge

EXAMPLES = settings(max_examples=2000, deadline=None)

days = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
cycles = st.sampled_from(list(BillingCycle))
prices = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("9999.9999"), places=4, allow_nan=False, allow_infinity=False
)
counts = st.integers(min_value=0, max_value=5000)
policies = st.sampled_from(list(DecreasePolicy))
currencies = st.sampled_from(["USD", "EUR", "JPY", "KWD"])


@st.composite
def period_and_changes(draw: st.DrawFn) -> tuple[Period, list[CountChange], int]:
    anchor = draw(days)
    cycle = draw(cycles)
    period = period_containing(draw(days), cycle=cycle, anchor=anchor)
    span = period.days
    raw = draw(st.lists(st.tuples(st.integers(-40, span + 40), counts), max_size=12))
    changes = [
        CountChange(period.start + timedelta(days=offset), count, order) for order, (offset, count) in enumerate(raw)
    ]
    return period, changes, draw(counts)


def brute_force_seat_days(period: Period, changes: list[CountChange], opening: int, policy: DecreasePolicy) -> int:
    billed = count_on(period.start - timedelta(days=1), changes, opening)
    total = 0
    for i in range(period.days):
        delta = count_on(period.start + timedelta(days=i), changes, opening) - billed
        total += delta if policy is DecreasePolicy.credit else max(0, delta)
    return total


@EXAMPLES
@given(data=period_and_changes(), price=prices, policy=policies, currency=currencies)
def test_amount_matches_a_day_by_day_count_and_is_whole_minor_units(
    data: tuple[Period, list[CountChange], int], price: Decimal, policy: DecreasePolicy, currency: str
) -> None:
    period, changes, opening = data
    result = period_charge(
        period=period,
        changes=changes,
        opening_count=opening,
        unit_price=price,
        unit_cost=price,
        policy=policy,
        currency=currency,
    )
    assert result.seat_days == brute_force_seat_days(period, changes, opening, policy)
    assert result.amount == result.amount.quantize(minor_unit(currency))
    assert sum(s.days for s in result.segments) == period.days


@EXAMPLES
@given(data=period_and_changes(), price=prices)
def test_no_credit_amount_lies_between_zero_and_the_full_period(
    data: tuple[Period, list[CountChange], int], price: Decimal
) -> None:
    period, changes, opening = data
    result = period_charge(
        period=period,
        changes=changes,
        opening_count=opening,
        unit_price=price,
        unit_cost=price,
        policy=DecreasePolicy.no_credit,
        currency="USD",
    )
    peak = max(s.count for s in result.segments)
    full_period = max(0, peak - result.billed_quantity) * price
    assert Decimal(0) <= result.amount <= round_money(full_period, "USD")


@EXAMPLES
@given(anchor=days, cycle=cycles, q0=counts, q1=counts, price=prices, pick=st.integers(0, 400))
def test_single_change_is_delta_times_price_times_remaining_days(
    anchor: date, cycle: BillingCycle, q0: int, q1: int, price: Decimal, pick: int
) -> None:
    period = period_containing(anchor + timedelta(days=pick), cycle=cycle, anchor=anchor)
    day = period.start + timedelta(days=pick % period.days)
    result = period_charge(
        period=period,
        changes=[CountChange(day, q1, 1)],
        opening_count=q0,
        unit_price=price,
        unit_cost=price,
        policy=DecreasePolicy.credit,
        currency="USD",
    )
    expected = (Decimal(q1 - q0) * price * period.days_from(day) / period.days).quantize(Decimal("0.01"))
    assert abs(result.amount - expected) <= Decimal("0.01")
    lo, hi = sorted([Decimal(0), Decimal(q1 - q0) * price])
    assert lo - Decimal("0.005") <= result.amount <= hi + Decimal("0.005")


@EXAMPLES
@given(
    data=period_and_changes(),
    bump=st.integers(1, 500),
    offset=st.integers(0, 400),
    price=prices,
    policy=policies,
)
def test_increase_then_same_decrease_on_one_day_nets_zero(
    data: tuple[Period, list[CountChange], int],
    bump: int,
    offset: int,
    price: Decimal,
    policy: DecreasePolicy,
) -> None:
    period, raw, opening = data
    # The portal's sequence grows with time: number the changes in day order, leaving room after each day.
    changes = [CountChange(c.day, c.count, 10 * i) for i, c in enumerate(sorted(raw, key=lambda c: (c.day, c.order)))]
    base = period_charge(
        period=period,
        changes=changes,
        opening_count=opening,
        unit_price=price,
        unit_cost=price,
        policy=policy,
        currency="USD",
    )
    day = period.start + timedelta(days=offset % period.days)
    level = count_on(day, changes, opening)
    after = max((c.order for c in changes if c.day <= day), default=-10)
    spiked = [*changes, CountChange(day, level + bump, after + 1), CountChange(day, level, after + 2)]
    again = period_charge(
        period=period,
        changes=spiked,
        opening_count=opening,
        unit_price=price,
        unit_cost=price,
        policy=policy,
        currency="USD",
    )
    assert again.amount == base.amount


@EXAMPLES
@given(data=period_and_changes(), price=prices, policy=policies, seed=st.randoms(use_true_random=False))
def test_the_order_changes_arrive_in_does_not_change_the_total(
    data: tuple[Period, list[CountChange], int], price: Decimal, policy: DecreasePolicy, seed: object
) -> None:
    import random

    assert isinstance(seed, random.Random)
    period, changes, opening = data
    shuffled = list(changes)
    seed.shuffle(shuffled)
    a = period_charge(
        period=period,
        changes=changes,
        opening_count=opening,
        unit_price=price,
        unit_cost=price,
        policy=policy,
        currency="USD",
    )
    b = period_charge(
        period=period,
        changes=shuffled,
        opening_count=opening,
        unit_price=price,
        unit_cost=price,
        policy=policy,
        currency="USD",
    )
    assert (a.amount, a.seat_days, a.segments) == (b.amount, b.seat_days, b.segments)


@EXAMPLES
@given(data=period_and_changes())
def test_native_layers_hold_the_no_credit_seat_days(data: tuple[Period, list[CountChange], int]) -> None:
    period, changes, opening = data
    layers = native_layers(period, changes, opening)
    expected = period_charge(
        period=period,
        changes=changes,
        opening_count=opening,
        unit_price=Decimal(1),
        unit_cost=Decimal(1),
        policy=DecreasePolicy.no_credit,
        currency="USD",
    ).seat_days
    assert sum(layer.quantity * layer.days for layer in layers) == expected
    assert all(period.contains(layer.start) and period.contains(layer.end) and layer.quantity > 0 for layer in layers)


@EXAMPLES
@given(anchor=days, cycle=cycles, start=days, length=st.integers(1, 800))
def test_periods_cover_every_day_exactly_once(anchor: date, cycle: BillingCycle, start: date, length: int) -> None:
    period = period_containing(start, cycle=cycle, anchor=anchor)
    assert period.contains(start)
    covered_until = period.start - timedelta(days=1)
    end = start + timedelta(days=length)
    while period.start <= end:
        assert period.start == covered_until + timedelta(days=1)  # no gap, no overlap
        assert period.start <= period.end
        assert period_containing(period.start, cycle=cycle, anchor=anchor) == period
        assert period_containing(period.end, cycle=cycle, anchor=anchor) == period
        assert 28 * cycle.months - 3 <= period.days <= 31 * cycle.months + 1
        covered_until = period.end
        period = next_period(period, cycle=cycle, anchor=anchor)
