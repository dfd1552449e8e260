"""Worked examples of DESIGN.md §5, each a case an MSP would check on an invoice. Every expected amount is worked out
by hand in the line beside it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.domain.billing import (
    Billing,
    DecreasePolicy,
    Layer,
    Prices,
    PriceSetting,
    ProrationMode,
    Schedule,
    Status,
    StatusChange,
    Term,
    native_layers,
)
from app.domain.history import Change, History
from app.domain.money import format_money, is_valid_price, round_money
from app.domain.periods import BillingCycle, Period, local_day, next_period, parse_cycle, period_containing
from app.domain.pricing import PriceSource, resolve_price
from app.domain.texts import catch_up_text, proration_text

NOV = Period(date(2026, 11, 1), date(2026, 11, 30))
DEC = Period(date(2026, 12, 1), date(2026, 12, 31))
P3 = Decimal("3.00")
LONG_AGO = date(2025, 1, 1)


def billing(
    changes: Sequence[tuple[date, int, int]] = (),
    *,
    opening: int = 1,
    prices: Sequence[tuple[date, str]] = ((LONG_AGO, "3.00"),),
    cost: str = "1.00",
    policy: DecreasePolicy = DecreasePolicy.no_credit,
    mode: ProrationMode = ProrationMode.line,
    status: Sequence[tuple[date, bool]] = ((LONG_AGO, True),),
    anchor: date = LONG_AGO,
    cycle: BillingCycle = BillingCycle.monthly,
) -> Billing:
    """A company billed monthly since long ago: `opening` licenses, then the (day, sequence, count) changes."""
    return Billing(
        history=History([Change(LONG_AGO, 0, opening), *(Change(d, s, c) for d, s, c in changes)]),
        prices=Prices(
            PriceSetting(day, i, False, Decimal(price), Decimal(cost)) for i, (day, price) in enumerate(prices)
        ),
        status=Status(StatusChange(day, i, active) for i, (day, active) in enumerate(status)),
        schedule=Schedule([Term(anchor, 17, cycle, anchor)]),
        mode=mode,
        policy=policy,
        currency="USD",
    )


def test_one_to_nine_on_day_16_of_a_30_day_month() -> None:
    owed = billing([(date(2026, 11, 16), 1, 9)]).owed(NOV)
    assert owed.billed_quantity == 1
    assert owed.base_amount == Decimal("3.00")  # 1 × 3.00, billed in advance
    assert owed.prorated_amount == Decimal("12.00")  # 8 × 3.00 × 15/30
    assert owed.prorated_cost == Decimal("4.00")  # 8 × 1.00 × 15/30
    assert owed.owed == Decimal("15.00")
    assert proration_text(owed) == "+8 licenses × $3.00 × 15/30 days (16–30 Nov 2026)"


def test_change_on_the_first_day_bills_the_full_period_and_on_the_last_one_day() -> None:
    assert billing([(date(2026, 11, 1), 1, 9)]).owed(NOV).prorated_amount == Decimal("24.00")  # 8 × 3.00 × 30/30
    last = billing([(date(2026, 11, 30), 1, 9)]).owed(NOV)
    assert last.prorated_amount == Decimal("0.80")  # 8 × 3.00 × 1/30
    assert "1/30 days (30 Nov 2026)" in proration_text(last)


def test_february_of_a_leap_year_has_29_days() -> None:
    feb = period_containing(date(2028, 2, 10), cycle=BillingCycle.monthly, anchor=date(2028, 1, 1))
    assert feb == Period(date(2028, 2, 1), date(2028, 2, 29))
    assert billing([(date(2028, 2, 15), 1, 30)]).owed(feb).prorated_amount == Decimal("45.00")  # 29 × 3.00 × 15/29


def test_anchor_on_the_31st_clamps_and_returns() -> None:
    anchor = date(2026, 1, 31)
    feb = period_containing(date(2026, 2, 15), cycle=BillingCycle.monthly, anchor=anchor)
    assert feb == Period(date(2026, 1, 31), date(2026, 2, 27))
    assert period_containing(date(2026, 3, 1), cycle=BillingCycle.monthly, anchor=anchor) == Period(
        date(2026, 2, 28), date(2026, 3, 30)
    )
    assert period_containing(date(2026, 3, 31), cycle=BillingCycle.monthly, anchor=anchor) == Period(
        date(2026, 3, 31), date(2026, 4, 29)
    )


def test_quarterly_semiannual_and_yearly_periods() -> None:
    anchor = date(2026, 1, 15)
    assert period_containing(date(2026, 5, 1), cycle=BillingCycle.quarterly, anchor=anchor) == Period(
        date(2026, 4, 15), date(2026, 7, 14)
    )
    assert period_containing(date(2026, 5, 1), cycle=BillingCycle.semiannual, anchor=anchor) == Period(
        date(2026, 1, 15), date(2026, 7, 14)
    )
    yearly = period_containing(date(2027, 1, 14), cycle=BillingCycle.yearly, anchor=anchor)
    assert yearly == Period(date(2026, 1, 15), date(2027, 1, 14))
    assert yearly.days == 365
    assert next_period(yearly, cycle=BillingCycle.yearly, anchor=anchor).start == date(2027, 1, 15)
    quarter = Period(date(2026, 10, 15), date(2027, 1, 14))
    owed = billing([(date(2026, 12, 1), 1, 5)], anchor=anchor, cycle=BillingCycle.quarterly).owed(quarter)
    # 92 days (15 Oct–14 Jan); 1 → 5 on 1 Dec leaves 45 days (1 Dec–14 Jan): 4 × 3.00 × 45/92 = 5.8695… → 5.87
    assert owed.prorated_amount == Decimal("5.87")


def test_a_change_at_2330_utc_is_the_next_day_in_the_tenants_timezone() -> None:
    moment = datetime(2026, 11, 15, 23, 30, tzinfo=UTC)
    assert local_day(moment, "UTC") == date(2026, 11, 15)
    assert local_day(moment, "Europe/Berlin") == date(2026, 11, 16)
    assert local_day(moment, "America/New_York") == date(2026, 11, 15)
    with pytest.raises(ValueError, match="timezone-aware"):
        local_day(datetime(2026, 11, 15, 23, 30), "UTC")  # noqa: DTZ001


def test_add_then_remove_nets_to_the_seat_days_used() -> None:
    owed = billing([(date(2026, 11, 16), 1, 9), (date(2026, 11, 21), 2, 1)]).owed(NOV)
    assert owed.seat_days == 40  # 8 seats for 16–20 Nov
    assert owed.prorated_amount == Decimal("4.00")  # 3.00 × 40/30
    assert proration_text(owed) == "+8 licenses × $3.00 × 5/30 days (16–20 Nov 2026)"


def test_two_changes_on_one_day_count_only_the_higher_sequence() -> None:
    same_day = [(date(2026, 11, 16), 1, 20), (date(2026, 11, 16), 2, 9)]
    assert billing(same_day).owed(NOV).prorated_amount == Decimal("12.00")  # only 9 counts: 8 × 3.00 × 15/30
    assert billing(list(reversed(same_day))).owed(NOV).prorated_amount == Decimal("12.00")  # whatever the order


def test_a_later_day_wins_over_a_higher_sequence() -> None:
    # Sequence 5 says 20 from the 10th; sequence 3 (made earlier, reported later) says 4 from the 20th.
    owed = billing([(date(2026, 11, 10), 5, 20), (date(2026, 11, 20), 3, 4)]).owed(NOV)
    assert [(s.start.day, s.count) for s in owed.stretches] == [(1, 1), (10, 20), (20, 4)]
    assert owed.prorated_amount == Decimal("22.30")  # (19 seats × 10 days + 3 seats × 11 days) × 3.00 / 30


def test_decrease_below_billed_no_credit_vs_credit() -> None:
    changes = [(date(2026, 11, 16), 1, 4)]
    assert billing(changes, opening=10).owed(NOV).prorated_amount == Decimal("0.00")
    credited = billing(changes, opening=10, policy=DecreasePolicy.credit).owed(NOV)
    assert credited.prorated_amount == Decimal("-9.00")  # −6 × 3.00 × 15/30
    assert proration_text(credited) == "−6 licenses × $3.00 × 15/30 days (16–30 Nov 2026)"


def test_no_credit_still_charges_seats_added_and_removed_within_the_period() -> None:
    # Billed 10; up to 12 on the 11th, down to 5 on the 21st: only the 10 days at 12 are above B.
    changes = [(date(2026, 11, 11), 1, 12), (date(2026, 11, 21), 2, 5)]
    assert billing(changes, opening=10).owed(NOV).prorated_amount == Decimal("2.00")  # 2 × 3.00 × 10/30
    credited = billing(changes, opening=10, policy=DecreasePolicy.credit).owed(NOV)
    assert credited.prorated_amount == Decimal("-3.00")  # (2 × 10 − 5 × 10) × 3.00 / 30


def test_changes_before_the_period_set_the_billed_quantity() -> None:
    owed = billing([(date(2026, 10, 20), 1, 5), (date(2026, 11, 16), 2, 9)]).owed(NOV)
    assert owed.billed_quantity == 5
    assert (owed.base_amount, owed.prorated_amount) == (Decimal("15.00"), Decimal("6.00"))  # 5 × 3; 4 × 3 × 15/30


def test_rounding_is_once_and_half_up() -> None:
    one_day = Period(date(2026, 11, 1), date(2026, 11, 1))
    daily = billing([(date(2026, 11, 1), 1, 2)], prices=((LONG_AGO, "0.005"),), anchor=LONG_AGO)
    assert daily.owed(one_day).prorated_amount == Decimal("0.01")  # 0.005 half up (banker's rounding gives 0.00)
    changes = [(date(2026, 11, 1), 1, 2), (date(2026, 11, 11), 2, 1), (date(2026, 11, 21), 3, 2)]
    # Two stretches of 10 days at +1 seat × 0.01: 0.0067 in all, rounded once to 0.01 (not twice to 0.00).
    assert billing(changes, prices=((LONG_AGO, "0.01"),)).owed(NOV).prorated_amount == Decimal("0.01")
    assert round_money(Decimal("2.5"), "JPY") == Decimal("3")
    assert round_money(Decimal("0.0005"), "KWD") == Decimal("0.001")


def test_a_price_change_applies_from_the_next_period_never_to_days_past() -> None:
    changes = [(date(2026, 11, 16), 1, 9)]
    repriced = billing(changes, prices=((LONG_AGO, "3.00"), (date(2026, 11, 20), "4.00")))
    assert repriced.owed(NOV).prorated_amount == Decimal("12.00")  # still 8 × 3.00 × 15/30
    assert repriced.owed(DEC).owed == Decimal("36.00")  # 9 × 4.00 from December
    on_the_first = billing(changes, prices=((LONG_AGO, "3.00"), (date(2026, 12, 1), "4.00")))
    assert on_the_first.owed(DEC).unit_price == P3  # set on 1 Dec: December had begun, January's price


def test_billing_started_mid_period_is_a_new_customer_from_that_day() -> None:
    started = billing(opening=5, status=((date(2026, 11, 21), True),))
    owed = started.owed(NOV)
    assert (owed.billed_quantity, owed.new_customer_from) == (0, date(2026, 11, 21))
    assert owed.owed == Decimal("5.00")  # 5 licenses × 3.00 × 10/30
    assert started.owed(DEC).owed == Decimal("15.00")  # then 5 × 3.00 in advance
    assert started.owed(Period(date(2026, 10, 1), date(2026, 10, 31))).owed == Decimal(0)


def test_billing_stopped_mid_period_bills_that_period_and_nothing_after() -> None:
    stopped = billing([(date(2026, 11, 25), 1, 9)], opening=5, status=((LONG_AGO, True), (date(2026, 11, 10), False)))
    assert stopped.owed(NOV).owed == Decimal("17.40")  # 5 × 3.00 + 4 × 3.00 × 6/30: the change after the stop counts
    assert stopped.owed(DEC).owed == Decimal(0)


def test_none_mode_bills_only_the_base() -> None:
    owed = billing([(date(2026, 11, 16), 1, 9)], mode=ProrationMode.none).owed(NOV)
    assert (owed.base_amount, owed.prorated_amount, owed.owed) == (Decimal("3.00"), Decimal(0), Decimal("3.00"))


def test_native_layers_follow_increases_and_close_on_decreases() -> None:
    changes = [(date(2026, 11, 5), 1, 4), (date(2026, 11, 10), 2, 6), (date(2026, 11, 20), 3, 3)]
    owed = billing(changes).owed(NOV)
    layers = native_layers(owed.billed_quantity, owed.stretches, NOV)
    # 1 → 4 on the 5th (+3), → 6 on the 10th (+2), → 3 on the 20th: the newest seats go first.
    assert layers == (
        Layer(1, date(2026, 11, 5), date(2026, 11, 19)),
        Layer(2, date(2026, 11, 5), date(2026, 11, 30)),
        Layer(2, date(2026, 11, 10), date(2026, 11, 19)),
    )
    assert sum(layer.quantity * layer.days for layer in layers) == owed.seat_days
    native = billing(changes, mode=ProrationMode.native).owed(NOV)
    # Each layer rounded on its own, as CW prorates each delta line: 1.50 + 5.20 + 2.00.
    assert native.prorated_amount == Decimal("8.70")


def test_texts_for_several_stretches_and_for_a_catch_up() -> None:
    owed = billing([(date(2026, 11, 11), 1, 3), (date(2026, 11, 21), 2, 5)]).owed(NOV)
    assert proration_text(owed) == (
        "+2 licenses × $3.00 × 10/30 days (11–20 Nov 2026); +4 licenses × $3.00 × 10/30 days (21–30 Nov 2026) = $6.00"
    )
    assert catch_up_text(owed, billed=Decimal("5.00"), reported=date(2026, 12, 20)) == (
        "Adjustment for 1–30 Nov 2026: owed $9.00 (1 license × $3.00 + +2 licenses × $3.00 × 10/30 days (11–20 Nov "
        "2026) + +4 licenses × $3.00 × 10/30 days (21–30 Nov 2026)), billed $5.00 (reported 20 Dec 2026)"
    )


def test_money_formatting() -> None:
    assert format_money(Decimal("3"), "USD") == "$3.00"
    assert format_money(Decimal("3.1250"), "USD") == "$3.125"
    assert format_money(Decimal("-1.5"), "EUR") == "-€1.50"
    assert format_money(Decimal("1234.5"), "CHF") == "CHF 1,234.50"
    assert format_money(Decimal("7"), "JPY") == "¥7"


def test_cycle_names() -> None:
    assert parse_cycle("SemiAnnual") is BillingCycle.semiannual
    assert parse_cycle("semi-annual") is BillingCycle.semiannual
    for bad in ("NotRecurring", "Weekly", "BiMonthly", ""):
        with pytest.raises(ValueError, match="not Monthly"):
            parse_cycle(bad)


def test_price_resolution() -> None:
    default = resolve_price(price_override=None, cost_override=None, default_price=P3, default_cost=Decimal("1.2"))
    assert (default.unit_price, default.price_source) == (P3, PriceSource.product_default)
    override = resolve_price(
        price_override=Decimal("2.5"), cost_override=None, default_price=P3, default_cost=Decimal("1.2")
    )
    assert (override.unit_price, override.price_source) == (Decimal("2.5"), PriceSource.override)
    assert (override.unit_cost, override.cost_source) == (Decimal("1.2"), PriceSource.product_default)
    assert not resolve_price(price_override=None, cost_override=None, default_price=None, default_cost=None).complete


def test_price_validity() -> None:
    assert is_valid_price(Decimal("3.1250"))
    assert is_valid_price(Decimal("99999999999999.9999"))
    for bad in ("-0.01", "3.00001", "1e14", "4.922729284193401e+28", "NaN", "Infinity"):
        assert not is_valid_price(Decimal(bad)), bad
