"""The license history across months (DESIGN §5): late, out-of-order and future-dated changes each count at their
day, on the invoice the MSP runs. Every expected amount is worked out by hand beside it."""

from __future__ import annotations

from datetime import date

from app.domain.markers import parse
from tests.story import World, billed_since_october, company_pk, d, ours


async def count_today(world: World) -> int:
    return int((await world.call("GET", "/api/v1/companies/c-42"))["license_count"])


async def test_deliveries_out_of_order_bill_the_seat_days_as_if_in_order(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 11, 20))
    await world.licenses("c-42", 9, sequence=3, effective=date(2026, 11, 16))  # the newer change arrives first
    await world.licenses("c-42", 5, sequence=2, effective=date(2026, 11, 10))
    await world.work()
    assert await count_today(world) == 9
    world.at(date(2026, 12, 2))
    await world.work()
    (december,) = world.invoice_due(agreement)
    # November, B = 1: +4 for 10–15 Nov (6 days) and +8 for 16–30 Nov (15 days) = 24 + 120 = 144 seat-days
    # × 3.00 / 30 = 14.40, with December's invoice; December's base 9 × 3.00 = 27.00.
    assert ours(world, december, pk) == [("base", d("27.00")), ("proration", d("14.40"))]


async def test_a_future_dated_change_moves_nothing_before_its_day(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 11, 10))
    await world.licenses("c-42", 6, sequence=2, effective=date(2026, 12, 15))  # announced a month ahead
    await world.work()
    assert await count_today(world) == 1
    lines = [(str(parse(a.get("serialNumber"))), a["quantity"]) for a in world.sandbox.store.additions_of(agreement)]
    base = [(marker, quantity) for marker, quantity in lines if marker.endswith(":b261001")]
    assert [quantity for _, quantity in base] == [1]  # October's running base line, untouched
    assert all(quantity != 6 for _, quantity in lines)  # and nothing for 6 yet
    world.at(date(2026, 12, 2))
    await world.work()
    (december,) = world.invoice_due(agreement)
    assert ours(world, december, pk) == [("base", d("3.00"))]  # December is billed in advance at 1: not yet 6
    world.at(date(2026, 12, 14))
    await world.work()
    assert await count_today(world) == 1
    world.at(date(2026, 12, 15))
    await world.work()  # the worker comes back on the day
    assert await count_today(world) == 6
    world.at(date(2027, 1, 2))
    await world.work()
    (january,) = world.invoice_due(agreement)
    # January's base 6 × 3.00 = 18.00; December: +5 for 15–31 Dec (17 days) × 3.00 / 31 = 8.2258… = 8.23.
    assert ours(world, january, pk) == [("base", d("18.00")), ("proration", d("8.23"))]
