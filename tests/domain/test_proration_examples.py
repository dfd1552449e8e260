"""Worked examples of DESIGN.md §5, each a case an MSP would check on an invoice."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.domain.money import format_money, is_valid_price, round_money
from app.domain.periods import BillingCycle, Period, next_period, parse_cycle, period_containing
from app.domain.pricing import PriceSource, resolve_price
from app.domain.proration import (
    CountChange,
    DecreasePolicy,
    Layer,
    PeriodCharge,
    charge_description,
    local_day,
    native_layers,
    period_charge,
)

NOV = Period(date(2026, 11, 1), date(2026, 11, 30))
P3 = Decimal("3.00")


def charge(
    changes: list[CountChange],
    *,
    opening: int = 1,
    period: Period = NOV,
    price: Decimal = P3,
    policy: DecreasePolicy = DecreasePolicy.no_credit,
    cost: Decimal = Decimal("1.00"),
) -> PeriodCharge:
    return period_charge(
        period=period,
        changes=changes,
        opening_count=opening,
        unit_price=price,
        unit_cost=cost,
        policy=policy,
        currency="USD",
    )


def test_one_to_nine_on_day_16_of_a_30_day_month() -> None:
    result = charge([CountChange(date(2026, 11, 16), 9, 1)])
    assert result.amount == Decimal("12.00")  # 8 × 3.00 × 15/30
    assert result.cost_amount == Decimal("4.00")
    assert result.billed_quantity == 1
    assert result.final_count == 9
    assert charge_description(result) == "+8 licenses × $3.00 × 15/30 days (16–30 Nov 2026)"


def test_change_on_the_anchor_day_bills_the_full_period() -> None:
    assert charge([CountChange(date(2026, 11, 1), 9, 1)]).amount == Decimal("24.00")


def test_change_on_the_last_day_bills_one_day() -> None:
    result = charge([CountChange(date(2026, 11, 30), 9, 1)])
    assert result.amount == Decimal("0.80")  # 8 × 3.00 × 1/30
    assert "1/30 days (30 Nov 2026)" in charge_description(result)


def test_february_of_a_leap_year_has_29_days() -> None:
    feb = period_containing(date(2028, 2, 10), cycle=BillingCycle.monthly, anchor=date(2028, 1, 1))
    assert feb == Period(date(2028, 2, 1), date(2028, 2, 29))
    result = charge([CountChange(date(2028, 2, 15), 30, 1)], opening=1, period=feb)
    assert result.amount == Decimal("45.00")  # 29 × 3.00 × 15/29


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
    assert period_containing(date(2026, 5, 31), cycle=BillingCycle.monthly, anchor=anchor).start == date(2026, 5, 31)


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


def test_days_before_the_anchor_still_fall_in_a_period() -> None:
    assert period_containing(date(2026, 10, 20), cycle=BillingCycle.monthly, anchor=date(2026, 11, 5)) == Period(
        date(2026, 10, 5), date(2026, 11, 4)
    )


def test_a_change_at_2330_utc_is_the_next_day_in_the_tenants_timezone() -> None:
    moment = datetime(2026, 11, 15, 23, 30, tzinfo=UTC)
    assert local_day(moment, "UTC") == date(2026, 11, 15)
    assert local_day(moment, "Europe/Berlin") == date(2026, 11, 16)
    assert local_day(moment, "America/New_York") == date(2026, 11, 15)
    day = local_day(moment, "Europe/Berlin")
    assert charge([CountChange(day, 9, 1)]).amount == Decimal("12.00")


def test_naive_effective_at_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        local_day(datetime(2026, 11, 15, 23, 30), "UTC")  # noqa: DTZ001


def test_add_then_remove_nets_to_the_seat_days_used() -> None:
    # 1 → 9 on the 16th, back to 1 on the 21st: 8 seats for 5 days.
    result = charge([CountChange(date(2026, 11, 16), 9, 1), CountChange(date(2026, 11, 21), 1, 2)])
    assert result.seat_days == 40
    assert result.amount == Decimal("4.00")
    assert charge_description(result) == "+8 licenses × $3.00 × 5/30 days (16–20 Nov 2026)"


def test_two_changes_on_one_day_count_only_the_later() -> None:
    same_day = [CountChange(date(2026, 11, 16), 20, 1), CountChange(date(2026, 11, 16), 9, 2)]
    assert charge(same_day).amount == Decimal("12.00")
    # Order, not list position, decides which is later.
    assert charge(list(reversed(same_day))).amount == Decimal("12.00")


def test_decrease_below_billed_no_credit_vs_credit() -> None:
    changes = [CountChange(date(2026, 11, 16), 4, 1)]
    assert charge(changes, opening=10).amount == Decimal("0.00")
    credited = charge(changes, opening=10, policy=DecreasePolicy.credit)
    assert credited.amount == Decimal("-9.00")  # −6 × 3.00 × 15/30
    assert charge_description(credited) == "−6 licenses × $3.00 × 15/30 days (16–30 Nov 2026)"


def test_no_credit_still_charges_seats_added_and_removed_within_the_period() -> None:
    # Billed 10; up to 12 on the 11th, down to 5 on the 21st: only the 10 days at 12 are above B.
    changes = [CountChange(date(2026, 11, 11), 12, 1), CountChange(date(2026, 11, 21), 5, 2)]
    assert charge(changes, opening=10).amount == Decimal("2.00")  # 2 × 3.00 × 10/30
    assert charge(changes, opening=10, policy=DecreasePolicy.credit).amount == Decimal("-3.00")  # (20 − 50) × 3.00 / 30


def test_changes_before_the_period_set_the_billed_quantity() -> None:
    changes = [CountChange(date(2026, 10, 20), 5, 1), CountChange(date(2026, 11, 16), 9, 2)]
    result = charge(changes, opening=1)
    assert result.billed_quantity == 5
    assert result.amount == Decimal("6.00")  # 4 × 3 × 15/30


def test_rounding_is_once_and_half_up() -> None:
    # 1 seat × 0.0050 × 1/1 day would be 0.005 → 0.01 half up (banker's rounding would give 0.00).
    one_day = Period(date(2026, 11, 1), date(2026, 11, 1))
    assert charge([CountChange(date(2026, 11, 1), 2, 1)], period=one_day, price=Decimal("0.005")).amount == Decimal(
        "0.01"
    )
    # Three stretches of 1/3 cent each are not rounded separately: 3 × 1 seat × 0.01 × 10/30 = 0.01.
    changes = [
        CountChange(date(2026, 11, 1), 2, 1),
        CountChange(date(2026, 11, 11), 1, 2),
        CountChange(date(2026, 11, 21), 2, 3),
    ]
    assert charge(changes, price=Decimal("0.01"), opening=1).amount == Decimal("0.01")
    assert round_money(Decimal("2.5"), "JPY") == Decimal("3")
    assert round_money(Decimal("0.0005"), "KWD") == Decimal("0.001")


def test_native_layers_follow_increases_and_close_on_decreases() -> None:
    changes = [
        CountChange(date(2026, 11, 5), 4, 1),
        CountChange(date(2026, 11, 10), 6, 2),
        CountChange(date(2026, 11, 20), 3, 3),
    ]
    layers = native_layers(NOV, changes, 1)
    # 1 → 4 on the 5th (+3), → 6 on the 10th (+2), → 3 on the 20th: the newest seats go first.
    assert layers == (
        Layer(1, date(2026, 11, 5), date(2026, 11, 19)),
        Layer(2, date(2026, 11, 5), date(2026, 11, 30)),
        Layer(2, date(2026, 11, 10), date(2026, 11, 19)),
    )
    assert sum(layer.quantity * layer.days for layer in layers) == charge(changes).seat_days


def test_description_for_several_stretches_shows_the_total() -> None:
    changes = [CountChange(date(2026, 11, 11), 3, 1), CountChange(date(2026, 11, 21), 5, 2)]
    text = charge_description(charge(changes))
    assert text == (
        "+2 licenses × $3.00 × 10/30 days (11–20 Nov 2026); +4 licenses × $3.00 × 10/30 days (21–30 Nov 2026) = $6.00"
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
