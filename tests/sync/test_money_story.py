"""Money on the invoice, across months: the service and the sandbox's agreement invoicing, hand-computed amounts.

Every expected amount is worked out in the comment beside it; none comes from the code under test.
"""

from __future__ import annotations

from datetime import date

from tests.story import World, company_pk, d


async def test_a_late_delivery_and_a_price_change_land_on_the_right_invoices(world: World) -> None:
    world.at(date(2026, 10, 1))
    agreement = world.agreement(1, start=date(2026, 10, 1))
    await world.setup(price="3.00", cost="1.00")
    await world.deliver({"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso"}})
    await world.licenses("c-42", 1, sequence=1, effective=date(2026, 10, 1))
    await world.work()
    world.at(date(2026, 10, 5))
    assert world.invoice_due(agreement)  # October: nothing of ours yet

    world.at(date(2026, 11, 2))
    world.invoice_due(agreement)  # November's invoice, before this company is billed
    world.at(date(2026, 11, 3))
    await world.call("PUT", "/api/v1/companies/c-42/mapping", json={"cw_company_id": 1, "cw_agreement_id": agreement})
    await world.call("PATCH", "/api/v1/companies/c-42/billing", json={"enabled": True})
    await world.work()

    world.at(date(2026, 11, 16))
    await world.licenses("c-42", 9, sequence=17, effective=date(2026, 11, 16))
    await world.work()

    world.at(date(2026, 12, 2))
    (december,) = world.invoice_due(agreement)
    # A new customer from 3 Nov: 1 license for 3–15 Nov (13 days) and 9 for 16–30 Nov (15 days):
    # 3.00 × (13 + 135) / 30 = 14.80, billed with December; December's base 9 × 3.00 = 27.00.
    lines = {line.description or "": line.amount for line in world.sandbox.invoicing.lines(december)}
    assert sorted(lines.values()) == [d("14.80"), d("27.00")]
    assert (
        "+1 license × $3.00 × 13/30 days (3–15 Nov 2026); +9 licenses × $3.00 × 15/30 days (16–30 Nov 2026) = $14.80"
        in lines
    )

    world.at(date(2026, 12, 5))  # late: 9 → 5 from 25 Nov, reported on 5 Dec
    await world.licenses("c-42", 5, sequence=18, effective=date(2026, 11, 25))
    await world.work()
    world.at(date(2026, 12, 10))  # the company's price goes to 4.00: from January on
    await world.call("PATCH", "/api/v1/companies/c-42/billing", json={"unit_price": "4.00"})
    await world.work()

    world.at(date(2027, 1, 20))  # the MSP invoices January late
    (january,) = world.invoice_due(agreement)
    lines = {line.description or "": line.amount for line in world.sandbox.invoicing.lines(january)}
    # November now owes 3.00 × (13×1 + 9×9 + 6×5) / 30 = 3.00 × 124 / 30 = 12.40: billed 14.80, so −2.40.
    # December owes 5 × 3.00 = 15.00 (B = 5 at the end of 30 Nov): billed 27.00, so −12.00.
    # January: 5 × 4.00 = 20.00.  Invoice: 20.00 − 2.40 − 12.00 = 5.60.
    assert sorted(lines.values()) == [d("-12.00"), d("-2.40"), d("20.00")]
    assert sum(lines.values()) == d("5.60")
    november_fix = next(text for text, amount in lines.items() if amount == d("-2.40"))
    assert november_fix.startswith("Adjustment for 1–30 Nov 2026: owed $12.40")
    assert "billed $14.80" in november_fix

    world.at(date(2027, 2, 3))
    (february,) = world.invoice_due(agreement)
    assert sum(line.amount for line in world.sandbox.invoicing.lines(february)) == d("20.00")
    # Owed: November 12.40 + December 15.00 + January 20.00 + February 20.00 = 67.40; invoiced 41.80 + 5.60 + 20.00.
    assert world.invoiced_for(await company_pk(world, "c-42")) == d("67.40")
