"""An independent billing review reproduced each of these as money on the wrong invoice; each is a named test here,
run through the service (API, webhooks, worker) against the sandbox's agreement invoicing, across month ends.
Every expected amount is worked out by hand beside it."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from app.db.models import SyncState
from tests.story import World, billed_since_october, company_pk, d, ours


async def test_the_rollover_leaves_last_periods_proration_line_for_its_invoice(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 11, 16))
    await world.licenses("c-42", 9, sequence=2, effective=date(2026, 11, 16))
    await world.work()
    world.at(date(2026, 12, 1), hour=3)
    await world.worker.schedule_full_reconcile()  # the periodic full reconcile runs before the MSP invoices
    await world.work()
    world.at(date(2026, 12, 5))
    (december,) = world.invoice_due(agreement)
    # 8 × 3.00 × 15/30 = 12.00 for November, and December's base 9 × 3.00 = 27.00.
    assert ours(world, december, pk) == [("base", d("27.00")), ("proration", d("12.00"))]


async def test_a_price_change_never_reprices_days_already_past(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)  # November
    world.at(date(2026, 11, 16))
    await world.licenses("c-42", 9, sequence=2, effective=date(2026, 11, 16))
    await world.work()
    world.at(date(2026, 11, 20))
    await world.call("PATCH", "/api/v1/companies/c-42/billing", json={"unit_price": "4.00"})
    await world.work()
    world.at(date(2026, 12, 3))
    await world.work()
    invoices = world.invoice_due(agreement)
    # 1 → 9 on 16 Nov at 3.00 stays 12.00 (not 16.00 at 4.00); December is 9 × 4.00 = 36.00.
    assert ours(world, invoices[-1], pk) == [("base", d("36.00")), ("proration", d("12.00"))]


async def test_a_change_backdated_into_invoiced_periods_is_caught_up(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    for day in (date(2026, 11, 2), date(2026, 12, 2)):
        world.at(day)
        await world.work()
        world.invoice_due(agreement)  # November and December billed 1 × 3.00 each
    world.at(date(2026, 12, 10))
    await world.licenses("c-42", 9, sequence=2, effective=date(2026, 10, 20))  # reported two months late
    await world.work()
    world.at(date(2027, 1, 2))
    await world.work()
    (january,) = world.invoice_due(agreement)
    # October: 8 × 3.00 × 12/31 (20–31 Oct) = 9.29; November and December billed B = 1 but 9 were in force: 8 × 3.00
    # = 24.00 each. January: 9 × 3.00 = 27.00. All with January's invoice.
    assert ours(world, january, pk) == [
        ("base", d("27.00")),
        ("catch_up", d("9.29")),
        ("catch_up", d("24.00")),
        ("catch_up", d("24.00")),
    ]


async def test_an_adopted_lines_seats_are_not_billed_again_as_proration(world: World) -> None:
    world.at(date(2026, 9, 1))
    agreement = world.agreement(1, start=date(2026, 9, 1))
    adopted = world.sandbox.store.create_addition(
        agreement,
        {
            "product": {"id": 1},
            "billCustomer": "Billable",
            "quantity": 50,
            "unitPrice": 3.0,
            "unitCost": 1.0,
            "effectiveDate": "2026-09-01T00:00:00Z",
            "invoiceDescription": "EDR (the MSP's own line)",
        },
    )
    await world.setup()
    await world.deliver({"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso"}})
    await world.work()
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)  # September to November: 50 × 3.00 each, the MSP's own line
    world.at(date(2026, 11, 10))
    await world.call("PUT", "/api/v1/companies/c-42/mapping", json={"cw_company_id": 1, "cw_agreement_id": agreement})
    await world.call("PATCH", "/api/v1/companies/c-42/billing", json={"enabled": True})
    await world.work()
    world.at(date(2026, 12, 2))
    await world.work()
    (december,) = world.invoice_due(agreement)
    lines = world.sandbox.invoicing.lines(december)
    # The adopted line's 50 seats are the count: December bills them once, and November owes no proration.
    assert [(line.addition_id, line.amount) for line in lines] == [(adopted["id"], d("150.00"))]
    pk = await company_pk(world)
    assert world.invoiced_for(pk, adopted={adopted["id"]}) == d("600.00")  # Sep, Oct, Nov, Dec: 4 × 150.00


async def test_a_change_made_before_the_msp_invoices_the_period_is_billed_once(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 12, 2))
    await world.licenses("c-42", 9, sequence=2, effective=date(2026, 12, 2))
    await world.work()
    world.at(date(2026, 12, 3))  # the MSP invoices December after the change reached CW
    (december,) = world.invoice_due(agreement)
    assert ours(world, december, pk) == [("base", d("3.00"))]  # December's base was frozen at 1 on 1 December
    world.at(date(2027, 1, 2))
    await world.work()
    (january,) = world.invoice_due(agreement)
    # 8 × 3.00 × 30/31 (2–31 Dec) = 23.23 for December, once; January 9 × 3.00.
    assert ours(world, january, pk) == [("base", d("27.00")), ("proration", d("23.23"))]


async def test_moving_to_another_agreement_bills_each_period_once(world: World) -> None:
    first = await billed_since_october(world)
    pk = await company_pk(world)
    second = world.agreement(1, start=date(2026, 9, 1), name="Managed Services 2027")
    world.at(date(2026, 11, 2))
    world.invoice_due(first)
    world.invoice_due(second)
    world.at(date(2026, 11, 16))
    await world.licenses("c-42", 9, sequence=2, effective=date(2026, 11, 16))
    await world.work()
    world.at(date(2026, 11, 20))
    moved = await world.http.put(
        "/api/v1/companies/c-42/mapping", headers=world.headers, json={"cw_company_id": 1, "cw_agreement_id": second}
    )
    assert moved.status_code == 200, moved.text  # not a 500
    await world.work()
    world.at(date(2026, 12, 2))
    await world.work()
    (old,) = world.invoice_due(first)
    (new,) = world.invoice_due(second)
    assert ours(world, old, pk) == []  # the old agreement bills nothing after November
    # The new one: November's proration 8 × 3.00 × 15/30 = 12.00 and December's base 9 × 3.00.
    assert ours(world, new, pk) == [("base", d("27.00")), ("proration", d("12.00"))]


async def test_a_cancelled_agreement_is_never_written_and_needs_attention_until_remapped(world: World) -> None:
    agreement = await billed_since_october(world)
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 11, 20))
    world.cancel_agreement(agreement)
    writes = world.sandbox.store.writes
    world.at(date(2026, 11, 22))
    await world.licenses("c-42", 4, sequence=2, effective=date(2026, 11, 22))
    await world.work()
    status = await world.call("GET", "/api/v1/companies/c-42/sync")
    assert status["status"] == "needs_attention"
    assert "cancelled" in status["last_error"]
    assert world.sandbox.store.writes == writes  # nothing written to the dead agreement
    world.at(date(2026, 12, 8))  # remapped a week into December
    replacement = world.agreement(1, start=date(2026, 12, 1), name="Managed Services (new)")
    await world.call("PUT", "/api/v1/companies/c-42/mapping", json={"cw_company_id": 1, "cw_agreement_id": replacement})
    await world.work()
    world.at(date(2027, 1, 2))
    await world.work()
    invoices = world.invoice_due(replacement)
    # December (the new agreement's first period) carries nothing of ours; January's invoice catches up November's
    # proration 3 × 3.00 × 9/30 (22–30 Nov) = 2.70 (its line could not be written before December began) and
    # December's 4 × 3.00 = 12.00 (the old agreement was cancelled: nothing billed it), and bills January's base.
    assert ours(world, invoices[-1], pk) == [("base", d("12.00")), ("catch_up", d("2.70")), ("catch_up", d("12.00"))]


async def test_native_mode_fits_cws_limits_and_its_increase_is_billed(world: World) -> None:
    agreement = await billed_since_october(world, settings={"proration_mode": "native", "prorate": "1"})
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 11, 16))
    await world.licenses("c-42", 9, sequence=2, effective=date(2026, 11, 16))
    await world.work()
    status = await world.call("GET", "/api/v1/companies/c-42/sync")
    assert status["status"] == "in_sync", status["last_error"]
    serials = [a["serialNumber"] for a in world.sandbox.store.additions_of(agreement)]
    assert all(len(s) <= 50 for s in serials)
    world.at(date(2026, 12, 2))
    await world.work()
    (december,) = world.invoice_due(agreement)
    # CW prorates the delta line: 8 × 3.00 × 15/30 = 12.00; December's base 9 × 3.00.
    assert ours(world, december, pk) == [("base", d("27.00")), ("delta", d("12.00"))]


@pytest.mark.parametrize("review", [False, True])
async def test_a_deleted_company_stops_billing_after_the_current_period(world: World, review: bool) -> None:
    agreement = await billed_since_october(world, licenses=5, settings={"sync_mode": "review"} if review else None)
    if review:
        await world.call("POST", "/api/v1/reconciliation/approve", json={})
        await world.work()
    pk = await company_pk(world)
    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)
    world.at(date(2026, 11, 20))
    await world.deliver({"type": "company.deleted", "data": {"company_id": "c-42"}})
    await world.work()
    if review:  # the end of billing is a change set like any other
        status = await world.call("GET", "/api/v1/companies/c-42/sync")
        assert status["status"] == "awaiting_approval"
        await world.call("POST", "/api/v1/reconciliation/approve", json={})
        await world.work()
    world.at(date(2026, 12, 2))
    await world.work()
    (december,) = world.invoice_due(agreement)
    assert ours(world, december, pk) == []  # November was billed (in advance); nothing from December on
    async with world.ctx.sessionmaker() as session:
        state = (await session.scalars(select(SyncState))).one()
    assert state.status in ("in_sync", "paused")
