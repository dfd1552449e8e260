"""Properties of the license history and of what a period owes, each over many generated cases."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.billing import (
    Billing,
    DecreasePolicy,
    Prices,
    PriceSetting,
    ProrationMode,
    Schedule,
    Status,
    StatusChange,
    Term,
    native_layers,
    weight,
)
from app.domain.history import Change, History
from app.domain.money import minor_unit, round_money
from app.domain.periods import BillingCycle, Period, period_containing

EXAMPLES = settings(max_examples=400, deadline=None)
START = date(2026, 1, 1)

prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("9999.9999"), places=4, allow_nan=False)
counts = st.integers(min_value=0, max_value=5000)
policies = st.sampled_from(list(DecreasePolicy))
currencies = st.sampled_from(["USD", "EUR", "JPY", "KWD"])
changes = st.lists(
    st.builds(Change, st.dates(START, START + timedelta(days=120)), st.integers(-1, 40), counts),
    max_size=15,
    unique_by=lambda c: c.sequence,  # one change per sequence (the applier keeps conflicts out of the history)
)


def brute_count(history: list[Change], day: date) -> int:
    """The count at the end of `day`: the change with the latest day on or before it, then the highest sequence."""
    best: Change | None = None
    for change in history:
        if change.day <= day and (best is None or (change.day, change.sequence) > (best.day, best.sequence)):
            best = change
    return best.count if best else 0


@EXAMPLES
@given(history=changes, order=st.randoms(use_true_random=False), offset=st.integers(-5, 130))
def test_the_count_on_any_day_does_not_depend_on_the_order_changes_arrived(
    history: list[Change], order: object, offset: int
) -> None:
    shuffled = list(history)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    day = START + timedelta(days=offset)
    assert History(history).count_on(day) == History(shuffled).count_on(day) == brute_count(history, day)


@EXAMPLES
@given(history=changes, first=st.integers(0, 60), length=st.integers(1, 70))
def test_stretches_cover_every_day_once_with_its_count(history: list[Change], first: int, length: int) -> None:
    start = START + timedelta(days=first)
    end = start + timedelta(days=length - 1)
    stretches = History(history).stretches(start, end)
    assert stretches[0].start == start
    assert stretches[-1].end == end
    assert sum(s.days for s in stretches) == length
    for stretch in stretches:
        for i in range(stretch.days):
            assert brute_count(history, stretch.start + timedelta(days=i)) == stretch.count


def billing_of(
    history: list[Change], price: Decimal, policy: DecreasePolicy, currency: str, mode: ProrationMode
) -> Billing:
    return Billing(
        history=History(history),
        prices=Prices([PriceSetting(START - timedelta(days=60), 1, False, price, price)]),
        status=Status([StatusChange(START - timedelta(days=60), 1, True)]),
        schedule=Schedule([Term(START - timedelta(days=60), 1, BillingCycle.monthly, START)]),
        mode=mode,
        policy=policy,
        currency=currency,
    )


@EXAMPLES
@given(history=changes, price=prices, policy=policies, currency=currencies, pick=st.integers(0, 110))
def test_what_a_period_owes_matches_a_day_by_day_count(
    history: list[Change], price: Decimal, policy: DecreasePolicy, currency: str, pick: int
) -> None:
    billing = billing_of(history, price, policy, currency, ProrationMode.line)
    period = period_containing(START + timedelta(days=pick), cycle=BillingCycle.monthly, anchor=START)
    owed = billing.owed(period)
    billed = brute_count(history, period.start - timedelta(days=1))
    seat_days = sum(
        weight(brute_count(history, period.start + timedelta(days=i)) - billed, policy) for i in range(period.days)
    )
    assert owed.billed_quantity == billed
    assert owed.seat_days == seat_days
    assert owed.base_amount == round_money(billed * price, currency)
    assert owed.prorated_amount == round_money(price * seat_days / period.days, currency)
    assert owed.owed == owed.owed.quantize(minor_unit(currency))
    if policy is DecreasePolicy.no_credit:
        peak = max(s.count for s in owed.stretches)
        assert Decimal(0) <= owed.prorated_amount <= round_money(max(0, peak - billed) * price, currency)


@EXAMPLES
@given(q0=counts, q1=counts, price=prices, pick=st.integers(0, 29))
def test_one_change_is_delta_times_price_times_the_days_left(q0: int, q1: int, price: Decimal, pick: int) -> None:
    november = Period(date(2026, 11, 1), date(2026, 11, 30))
    day = november.start + timedelta(days=pick)
    history = [Change(START, 0, q0), Change(day, 1, q1)]
    owed = billing_of(history, price, DecreasePolicy.credit, "USD", ProrationMode.line).owed(november)
    expected = round_money(Decimal(q1 - q0) * price * november.days_from(day) / november.days, "USD")
    assert owed.prorated_amount == expected


@EXAMPLES
@given(history=changes, pick=st.integers(0, 110))
def test_native_layers_hold_the_seats_above_b_every_day(history: list[Change], pick: int) -> None:
    billing = billing_of(history, Decimal("1"), DecreasePolicy.no_credit, "USD", ProrationMode.line)
    period = period_containing(START + timedelta(days=pick), cycle=BillingCycle.monthly, anchor=START)
    owed = billing.owed(period)
    layers = native_layers(owed.billed_quantity, owed.stretches, period)
    for i in range(period.days):
        day = period.start + timedelta(days=i)
        held = sum(layer.quantity for layer in layers if layer.start <= day <= layer.end)
        assert held == max(0, brute_count(history, day) - owed.billed_quantity)
