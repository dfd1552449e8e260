"""The sandbox invoices agreements as ConnectWise does (SEMANTICS §10.8), over a year, against hand-computed totals.

Every amount below is worked out by hand in the comment next to it; none comes from the code under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.connectwise.client import ConnectWiseClient, replace
from app.connectwise.errors import CWValidationError
from app.connectwise.sandbox.app import Sandbox
from app.connectwise.sandbox.credentials import SANDBOX_CREDENTIALS
from tests.spec_validation import ValidatingTransport


@dataclass
class Calendar:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def go(self, day: date) -> None:
        self.now = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)


@pytest.fixture
def calendar() -> Calendar:
    return Calendar(datetime(2025, 12, 20, 9, 0, tzinfo=UTC))


@pytest.fixture
def sandbox(calendar: Calendar) -> Sandbox:
    return Sandbox(now=calendar)


@pytest.fixture
async def cw(transport: ValidatingTransport, fast_retries: None) -> AsyncIterator[ConnectWiseClient]:
    async with httpx.AsyncClient(transport=transport) as http:
        yield ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=1)


async def new_agreement(cw: ConnectWiseClient, *, prorate: bool, name: str = "Licenses") -> int:
    body = {
        "name": name,
        "type": {"id": 1},
        "company": {"id": 1},
        "contact": {"id": 1},
        "startDate": "2026-01-01T00:00:00Z",
        "billStartDate": "2026-01-01T00:00:00Z",
        "noEndingDateFlag": True,
        "billingCycle": {"id": 1},  # Monthly
        "prorateFlag": prorate,
    }
    return int((await cw.post("/finance/agreements", body))["id"])


async def add(
    cw: ConnectWiseClient,
    agreement_id: int,
    *,
    quantity: int,
    price: str,
    effective: date,
    cancelled: date | None = None,
    bill: str = "Billable",
    less_included: int = 0,
) -> int:
    body: dict[str, Any] = {
        "product": {"id": 1},
        "billCustomer": bill,
        "quantity": quantity,
        "lessIncluded": less_included,
        "unitPrice": float(price),
        "unitCost": 1.0,
        "effectiveDate": f"{effective.isoformat()}T00:00:00Z",
    }
    if cancelled is not None:
        body["cancelledDate"] = f"{cancelled.isoformat()}T00:00:00Z"
    return (await cw.create_addition(agreement_id, body)).id


async def invoice(cw: ConnectWiseClient, sandbox: Sandbox, agreement_id: int) -> tuple[Decimal, dict[int, Decimal]]:
    """Invoice the due period: (the invoice's total as CW reports it, amount per addition from the sandbox)."""
    invoice_id = await cw.invoice_agreement(agreement_id)
    header = await cw.get_invoice(invoice_id)
    assert header.total is not None
    lines = {line.addition_id: line.amount for line in sandbox.invoicing.lines(invoice_id)}
    assert sum(lines.values(), Decimal(0)) == header.total  # the header adds up its lines
    return header.total, lines


def d(text: str) -> Decimal:
    return Decimal(text)


async def test_an_unprorated_agreement_over_thirteen_months(
    cw: ConnectWiseClient, sandbox: Sandbox, calendar: Calendar
) -> None:
    agreement = await new_agreement(cw, prorate=False)
    # An addition that was there before billing started (the kind the service adopts): bills from January.
    a = await add(cw, agreement, quantity=10, price="3.00", effective=date(2025, 6, 1))
    totals: list[Decimal] = []

    calendar.go(date(2026, 1, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert (total, lines) == (d("30.00"), {a: d("30.00")})  # 10 × 3.00
    totals.append(total)
    with pytest.raises(CWValidationError):  # invoicing twice in January bills January once: February is not due
        await cw.invoice_agreement(agreement)

    calendar.go(date(2026, 1, 20))
    b = await add(cw, agreement, quantity=4, price="2.50", effective=date(2026, 1, 20))  # mid-month, no prorate
    calendar.go(date(2026, 2, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {a: d("30.00"), b: d("10.00")}  # 20–31 Jan of b is never billed; 4 × 2.50 for February
    totals.append(total)

    calendar.go(date(2026, 2, 10))
    await cw.patch_addition(agreement, a, [replace("quantity", 12)])  # February is charged: not re-billed
    calendar.go(date(2026, 3, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {a: d("36.00"), b: d("10.00")}  # 12 × 3.00 from March
    totals.append(total)

    calendar.go(date(2026, 3, 5))
    c = await add(
        cw,
        agreement,
        quantity=3,
        less_included=1,
        price="4.00",
        effective=date(2026, 4, 1),
        cancelled=date(2026, 4, 30),
    )
    free = await add(cw, agreement, quantity=5, price="9.00", effective=date(2026, 3, 1), bill="NoCharge")
    hidden = await add(cw, agreement, quantity=5, price="9.00", effective=date(2026, 3, 1), bill="DoNotBill")
    calendar.go(date(2026, 4, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    # (3 − 1 included) × 4.00 = 8.00; NoCharge printed at 0; DoNotBill left out
    assert lines == {a: d("36.00"), b: d("10.00"), c: d("8.00"), free: d("0")}
    assert hidden not in lines
    assert total == d("54.00")
    totals.append(total)

    calendar.go(date(2026, 4, 15))
    await cw.patch_addition(agreement, b, [replace("cancelledDate", "2026-04-30T00:00:00Z")])
    calendar.go(date(2026, 5, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {a: d("36.00"), free: d("0")}  # b and c ended on 30 April
    may = max(sandbox.store.invoices.rows)

    calendar.go(date(2026, 5, 3))
    await cw.patch_addition(agreement, a, [replace("unitPrice", 3.5)])
    sandbox.invoicing.delete(may)  # deleting the May invoice reopens May …
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {a: d("42.00"), free: d("0")}  # … and May is billed again as the lines are now: 12 × 3.50
    totals.append(total)

    calendar.go(date(2026, 7, 3))  # the MSP skipped June's run: the first call bills June, the second July
    for _ in range(2):
        total, lines = await invoice(cw, sandbox, agreement)
        assert total == d("42.00")
        totals.append(total)
    with pytest.raises(CWValidationError):
        await cw.invoice_agreement(agreement)

    await cw.patch_addition(agreement, a, [replace("cancelledDate", "2026-12-31T00:00:00Z")])
    for month in range(8, 13):
        calendar.go(date(2026, month, 1))
        total, _ = await invoice(cw, sandbox, agreement)
        assert total == d("42.00")
        totals.append(total)
    calendar.go(date(2027, 1, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {free: d("0")}  # a was cancelled on 31 December
    totals.append(total)

    assert len(totals) == 13
    # 30 + 40 + 46 + 54 + 42 (May, billed again) + 42 × 7 (June–December) + 0
    assert sum(totals, Decimal(0)) == d("506.00")
    assert sandbox.invoicing.billed_for(agreement_id=agreement) == d("506.00")  # the deleted May invoice is gone


async def test_a_prorated_agreement_charges_uncharged_days_once(
    cw: ConnectWiseClient, sandbox: Sandbox, calendar: Calendar
) -> None:
    agreement = await new_agreement(cw, prorate=True)
    calendar.go(date(2025, 12, 28))
    p = await add(cw, agreement, quantity=1, price="22.00", effective=date(2026, 1, 1))
    for month in (1, 2, 3):
        calendar.go(date(2026, month, 1))
        total, lines = await invoice(cw, sandbox, agreement)
        assert lines == {p: d("22.00")}
    first = sandbox.invoicing.lines(min(sandbox.store.invoices.rows))[0]
    assert first.note == "This item has been prorated with a start date of: 1/1/2026"  # note, no proration

    calendar.go(date(2026, 3, 16))  # after the March invoice, effective the 15th (the worked example, §10.5)
    q = await add(cw, agreement, quantity=2, price="22.00", effective=date(2026, 3, 15))
    calendar.go(date(2026, 4, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {p: d("22.00"), q: d("68.13")}  # 2 × 22.00 for April + 2 × 22.00 × 17/31 (15–31 March) = 24.13
    shown = await cw.get(f"/finance/agreements/{agreement}/additions/{q}")
    # What CW shows on the addition for its first, partial period: 22.00 × 17/31 per unit, × 2 extended.
    assert (shown["proratePrice"], shown["extendedProratePrice"]) == (12.06, 24.13)
    assert "proratePrice" not in await cw.get(f"/finance/agreements/{agreement}/additions/{p}")
    q_line = next(line for line in sandbox.invoicing.lines(max(sandbox.store.invoices.rows)) if line.addition_id == q)
    assert q_line.note == "This item has been prorated with a start date of: 3/15/2026"
    assert total == d("90.13")

    calendar.go(date(2026, 4, 17))  # a delta line for the rest of April: billed once, pro rata, on May's invoice
    r = await add(cw, agreement, quantity=3, price="10.00", effective=date(2026, 4, 17), cancelled=date(2026, 4, 30))
    calendar.go(date(2026, 5, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {p: d("22.00"), q: d("44.00"), r: d("14.00")}  # 3 × 10.00 × 14/30
    assert total == d("80.00")

    calendar.go(date(2026, 5, 10))  # backdated into three invoiced months
    s = await add(cw, agreement, quantity=1, price="30.00", effective=date(2026, 3, 1))
    calendar.go(date(2026, 6, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {p: d("22.00"), q: d("44.00"), s: d("120.00")}  # June in full + March, April, May at 31/31 …
    assert total == d("186.00")

    calendar.go(date(2026, 6, 20))
    t = await add(cw, agreement, quantity=1, price="30.00", effective=date(2026, 6, 10))
    calendar.go(date(2026, 7, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines == {p: d("22.00"), q: d("44.00"), s: d("30.00"), t: d("51.00")}  # 30.00 + 30.00 × 21/30 (10–30 Jun)

    calendar.go(date(2026, 8, 5))
    u = await add(cw, agreement, quantity=1, price="31.00", effective=date(2026, 8, 5))
    calendar.go(date(2026, 8, 10))  # August invoiced late: the new line's own days of August are on it
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines[u] == d("27.00")  # 31.00 × 27/31 (5–31 Aug)
    assert total == d("153.00")  # 22 + 44 + 30 + 30 + 27
    calendar.go(date(2026, 9, 1))
    total, lines = await invoice(cw, sandbox, agreement)
    assert lines[u] == d("31.00")
    assert total == d("157.00")


async def test_a_cancelled_agreement_stops_billing_and_refuses_additions(
    cw: ConnectWiseClient, sandbox: Sandbox, calendar: Calendar
) -> None:
    agreement = await new_agreement(cw, prorate=False)
    addition = await add(cw, agreement, quantity=2, price="5.00", effective=date(2026, 1, 1))
    calendar.go(date(2026, 1, 1))
    await invoice(cw, sandbox, agreement)
    calendar.go(date(2026, 1, 12))
    await cw.patch(f"/finance/agreements/{agreement}", [replace("cancelledFlag", True)])
    read = await cw.get_agreement(agreement)
    assert read.agreement_status == "Cancelled"
    assert read.date_cancelled is not None
    assert read.date_cancelled.date() == date(2026, 1, 12)
    with pytest.raises(CWValidationError) as refused:
        await add(cw, agreement, quantity=1, price="1.00", effective=date(2026, 2, 1))
    assert refused.value.errors[0].field == "agreementId"
    with pytest.raises(CWValidationError):
        await cw.patch_addition(agreement, addition, [replace("quantity", 3)])
    calendar.go(date(2026, 2, 1))
    with pytest.raises(CWValidationError):  # nothing after the cancellation is billed
        await cw.invoice_agreement(agreement)


async def test_an_ended_agreement_is_expired(cw: ConnectWiseClient, calendar: Calendar) -> None:
    agreement = await new_agreement(cw, prorate=False)
    await cw.patch(
        f"/finance/agreements/{agreement}",
        [replace("noEndingDateFlag", False), replace("endDate", "2026-03-31T00:00:00Z")],
    )
    calendar.go(date(2026, 3, 31))
    assert (await cw.get_agreement(agreement)).agreement_status == "Active"
    calendar.go(date(2026, 4, 1))
    assert (await cw.get_agreement(agreement)).agreement_status == "Expired"
    with pytest.raises(CWValidationError):
        await add(cw, agreement, quantity=1, price="1.00", effective=date(2026, 4, 1))


async def test_recap_and_invoice_reads(cw: ConnectWiseClient, sandbox: Sandbox, calendar: Calendar) -> None:
    agreement = await new_agreement(cw, prorate=False)
    await add(cw, agreement, quantity=3, price="2.00", effective=date(2026, 1, 1))
    calendar.go(date(2026, 2, 14))
    recap = await cw.get_agreement_recap(agreement)
    assert recap.unbilled_periods == 2  # January and February are due, none billed
    assert recap.next_invoice_date is not None
    assert recap.next_invoice_date.date() == date(2026, 1, 1)
    assert recap.next_invoice_amount == d("6.00")
    first = await cw.invoice_agreement(agreement)
    second = await cw.invoice_agreement(agreement)
    recap = await cw.get_agreement_recap(agreement)
    assert recap.unbilled_periods == 0
    assert recap.next_invoice_date is not None
    assert recap.next_invoice_date.date() == date(2026, 3, 1)
    assert recap.last_invoice_amount == d("6.00")
    assert (await cw.get_agreement(agreement)).next_invoice_date == recap.next_invoice_date
    invoices = await cw.list_invoices(agreement_id=agreement)
    assert [i.id for i in invoices] == [second, first]  # newest first
    assert [i.date.date() if i.date else None for i in invoices] == [date(2026, 2, 1), date(2026, 1, 1)]
    assert all(i.agreement and i.agreement.id == agreement and i.type == "Agreement" for i in invoices)
    assert await cw.count_invoices(agreement_id=agreement) == 2
    since = await cw.list_invoices(agreement_id=agreement, since=datetime(2026, 2, 1, tzinfo=UTC))
    assert [i.id for i in since] == [second]
    assert [r.id for r in await cw.list_agreement_recaps([agreement])] == [agreement]
    assert [a.id for a in await cw.get_agreements([agreement, 1])] == [1, agreement]


async def test_the_sandbox_only_routes(sandbox: Sandbox, calendar: Calendar) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox), base_url="http://sandbox") as http:
        refused = await http.post("/_sandbox/clock", json={"now": "2027-01-01T00:00:00Z"})
        assert refused.status_code == 403  # a sandbox started without --settable-clock
        assert (await http.get("/_sandbox/clock")).json() == {"now": "2025-12-20T09:00:00Z"}
        sandbox.settable_clock = True
        moved = await http.post("/_sandbox/clock", json={"now": "2027-01-01T10:00:00+01:00"})
        assert moved.json() == {"now": "2027-01-01T09:00:00Z"}
        assert sandbox.store.today() == date(2027, 1, 1)
        assert (await http.post("/_sandbox/clock", json={"now": "2027-01-01"})).status_code == 400  # no timezone
        assert (await http.get("/_sandbox/invoices/99/lines")).status_code == 404


async def test_agreements_need_name_type_company_and_contact(sandbox: Sandbox, fast_retries: None) -> None:
    complete = {"name": "X", "type": {"id": 1}, "company": {"id": 1}, "contact": {"id": 1}}
    async with sandbox.http_client() as http:  # requests the spec itself calls invalid: not through the validator
        cw = ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=1)
        for missing in complete:
            with pytest.raises(CWValidationError) as refused:
                await cw.post("/finance/agreements", {k: v for k, v in complete.items() if k != missing})
            assert refused.value.errors[0].field == missing
        with pytest.raises(CWValidationError) as refused:
            await cw.post("/finance/agreements", {**complete, "name": "x" * 101})
        assert refused.value.errors[0].code == "OutOfRange"


async def test_additions_refuse_negative_quantities_and_reversed_dates(cw: ConnectWiseClient) -> None:
    with pytest.raises(CWValidationError) as refused:
        await add(cw, 1, quantity=-1, price="1.00", effective=date(2026, 1, 1))
    assert refused.value.errors[0].field == "quantity"
    with pytest.raises(CWValidationError) as refused:
        await add(cw, 1, quantity=1, price="1.00", effective=date(2026, 2, 1), cancelled=date(2026, 1, 31))
    assert refused.value.errors[0].field == "cancelledDate"
    ok = await add(cw, 1, quantity=1, price="1.00", effective=date(2026, 2, 1), cancelled=date(2026, 2, 1))
    with pytest.raises(CWValidationError):  # a PATCH that would reverse them is refused whole
        await cw.patch_addition(1, ok, [replace("quantity", 5), replace("cancelledDate", "2026-01-01T00:00:00Z")])
    assert (await cw.get_addition(1, ok)).quantity == 1
