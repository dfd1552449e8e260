"""Random billing histories over thirteen months and more, run through the real service against the sandbox.

A scenario is what happens to one company, day by day: the portal's license changes (delivered late, out of order,
twice, backdated into invoiced periods, future-dated), price and cost changes, billing switched off and on again, a
move to another agreement, an agreement cancelled in ConnectWise and the company remapped, an adopted line, review
mode with approvals, ConnectWise failing and the worker crashing — and the MSP running agreement invoicing on a random
day of every month. `run` plays it through the HTTP route, the API, the worker and the CW client against the sandbox,
one virtual clock for both, and returns what the sandbox invoiced next to what the plain reference
(`tests/sim/reference.py`) says was owed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import select

from app.db.models import Company
from app.domain.markers import company_key, parse
from tests.sim.explain import why_unexplained
from tests.sim.reference import Truth, owed_through
from tests.sim.setup import open_world
from tests.story import World

START = date(2026, 1, 1)
PRICES = [Decimal("3.00"), Decimal("2.50"), Decimal("4.25"), Decimal("3.3333"), Decimal("1.99")]


@dataclass(frozen=True)
class Change:
    made: int  # the day (from START) the portal made the change; its sequence follows this order
    effective: int  # the day it is effective from (before `made`: backdated, after: future-dated)
    count: int
    delay: int  # days between making it and the delivery arriving
    duplicate: str | None = None  # "resend" (same webhook-id later) or "again" (same sequence, a new webhook-id)


@dataclass(frozen=True)
class Scenario:
    seed: int
    mode: str
    policy: str
    review: bool
    mapped_on: int  # the day the company is mapped and billing enabled
    adopted: int | None  # an existing line of this many licenses is adopted (mapping in January only)
    changes: tuple[Change, ...]
    prices: tuple[tuple[int, bool, int], ...]  # (day, company override? else the product default, index in PRICES)
    pause: tuple[int, int] | None  # billing disabled on day a, enabled again on day b
    move_on: int | None  # moved to another agreement that day
    cancel: tuple[int, int] | None  # the agreement cancelled in CW on day a, the company remapped on day b
    invoice_days: tuple[int, ...]  # the day of the month the MSP invoices, per month
    invoice_first: tuple[bool, ...]  # per month: invoicing runs before the worker that day
    fault_rate: float
    crash_rate: float

    def horizon(self) -> int:
        """The last day anything happens."""
        days = [self.mapped_on]
        days += [c.made + c.delay + (5 if c.duplicate else 0) for c in self.changes] + [
            c.effective for c in self.changes
        ]
        days += [p[0] for p in self.prices]
        days += list(self.pause or ()) + list(self.cancel or ()) + ([self.move_on] if self.move_on else [])
        return max(days)


@st.composite
def scenarios(draw: st.DrawFn, *, months: int = 13) -> Scenario:
    span = months * 30
    mapped_on = draw(st.integers(0, 45))
    adopted = draw(st.one_of(st.none(), st.integers(1, 20))) if mapped_on < 28 else None
    changes = []
    for _ in range(draw(st.integers(2, 18))):
        made = draw(st.integers(0, span))
        shift = draw(st.sampled_from([0, 0, 0, -draw(st.integers(1, 70)), draw(st.integers(1, 45))]))
        changes.append(
            Change(
                made=made,
                effective=max(0, made + shift),
                count=draw(st.integers(0, 30)),
                delay=draw(st.sampled_from([0, 0, 0, 1, 3, draw(st.integers(0, 40))])),
                duplicate=draw(st.sampled_from([None, None, None, None, "resend", "again"])),
            )
        )
    changes.sort(key=lambda c: c.made)
    prices = tuple(
        (draw(st.integers(0, span)), draw(st.booleans()), draw(st.integers(0, len(PRICES) - 1)))
        for _ in range(draw(st.integers(0, 3)))
    )
    pause = None
    if draw(st.booleans()) and draw(st.booleans()):
        first = draw(st.integers(mapped_on + 1, span))
        pause = (first, first + draw(st.integers(1, 70)))
    move_on = draw(st.one_of(st.none(), st.integers(mapped_on + 1, span))) if draw(st.booleans()) else None
    cancel = None
    if move_on is None and draw(st.booleans()) and draw(st.booleans()):
        first = draw(st.integers(mapped_on + 1, span))
        cancel = (first, first + draw(st.integers(1, 25)))
    total_months = months + 5
    return Scenario(
        seed=draw(st.integers(0, 2**32)),
        mode=draw(st.sampled_from(["line", "line", "line", "none"])),
        policy=draw(st.sampled_from(["no_credit", "no_credit", "credit"])),
        review=draw(st.booleans()) and draw(st.booleans()),
        mapped_on=mapped_on,
        adopted=adopted,
        changes=tuple(changes),
        prices=prices,
        pause=pause,
        move_on=move_on,
        cancel=cancel,
        invoice_days=tuple(draw(st.integers(1, 28)) for _ in range(total_months)),
        invoice_first=tuple(draw(st.booleans()) for _ in range(total_months)),
        fault_rate=draw(st.sampled_from([0.0, 0.0, 0.05, 0.15])),
        crash_rate=draw(st.sampled_from([0.0, 0.0, 0.03, 0.08])),
    )


def day_of(offset: int) -> date:
    return START + timedelta(days=offset)


@dataclass
class Result:
    invoiced: Decimal
    owed: Decimal
    through: date
    notes: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # invoice lines whose text does not account for the amount


class Crash(Exception):
    pass


async def run(scenario: Scenario, database_url: str, data_dir: Path) -> Result:
    async with open_world(database_url, data_dir) as world:
        return await _play(scenario, world)


async def _play(s: Scenario, world: World) -> Result:
    rng = random.Random(s.seed)
    truth = Truth(mode=s.mode, policy=s.policy)
    world.at(START, hour=7)
    sandbox = world.sandbox
    sandbox.faults.seed = s.seed
    sandbox.faults.__post_init__()

    async def crash(step: str) -> None:
        if s.crash_rate and rng.random() < s.crash_rate:
            raise Crash(step)

    world.crash = crash
    agreements = [world.agreement(1, start=START, name="Managed Services")]
    adopted_ids: set[int] = set()
    if s.adopted:
        line = sandbox.store.create_addition(
            agreements[0],
            {
                "product": {"id": 1},
                "billCustomer": "Billable",
                "quantity": s.adopted,
                "unitPrice": 2.75,
                "unitCost": 1.0,
                "effectiveDate": "2025-06-01T00:00:00Z",
                "invoiceDescription": "Licenses (the MSP's own line)",
            },
        )
        adopted_ids.add(line["id"])
        truth.adopted = (date(2025, 6, 1), s.adopted, Decimal("2.75"))
    await world.setup(
        price=str(PRICES[0]),
        cost="1.00",
        proration_mode=s.mode,
        decrease_policy=s.policy,
        sync_mode="review" if s.review else "auto",
    )
    truth.prices.append((START, PRICES[0]))
    await world.deliver({"type": "company.upserted", "data": {"company_id": "c-1", "name": "Contoso"}})
    await world.work()

    # The days on which something happens, and what.
    actions: dict[int, list[tuple[int, str, Any]]] = {}

    def at(day: int, order: int, kind: str, payload: Any = None) -> None:
        actions.setdefault(day, []).append((order, kind, payload))

    at(s.mapped_on, 0, "map", None)
    for sequence, change in enumerate(s.changes, start=1):
        truth.changes.append((day_of(change.effective), sequence, change.count))
        webhook = f"w-{sequence}"
        at(change.made + change.delay, 2, "deliver", (change, sequence, webhook))
        if change.duplicate == "resend":
            at(change.made + change.delay + 5, 2, "deliver", (change, sequence, webhook))
        elif change.duplicate == "again":
            at(change.made + change.delay + 2, 2, "deliver", (change, sequence, f"{webhook}-again"))
    override: Decimal | None = None
    default = PRICES[0]
    for day, company_level, index in s.prices:
        at(day, 1, "price", (company_level, PRICES[index]))
    if s.pause:
        at(s.pause[0], 1, "disable", None)
        at(s.pause[1], 1, "enable", None)
    if s.move_on is not None:
        at(s.move_on, 1, "move", None)
    if s.cancel:
        at(s.cancel[0], 1, "cancel", None)
        at(s.cancel[1], 1, "remap", None)
    last = s.horizon()
    end = START
    month = 0
    while True:  # the months: invoicing on its day, until three quiet months after the last event
        first = date(START.year + (START.month - 1 + month) // 12, (START.month - 1 + month) % 12 + 1, 1)
        if first > day_of(last) + timedelta(days=95) or month >= len(s.invoice_days):
            break
        at((first - START).days, 3, "rollover", None)
        at((first - START).days + s.invoice_days[month] - 1, 4 if not s.invoice_first[month] else -1, "invoice", None)
        end = first
        month += 1

    billing_on = False
    for day in sorted(actions):
        world.at(day_of(day), hour=8)
        todays = sorted(actions[day], key=lambda a: (a[0], a[1]))
        for order, kind, payload in todays:
            if order >= 4:
                continue  # after the worker's run
            if kind == "invoice":
                for agreement in agreements:
                    world.invoice_due(agreement)
            elif kind == "map":
                await world.call(
                    "PUT", "/api/v1/companies/c-1/mapping", json={"cw_company_id": 1, "cw_agreement_id": agreements[-1]}
                )
                await world.call("PATCH", "/api/v1/companies/c-1/billing", json={"enabled": True})
                truth.billing.append((day_of(day), True))
                billing_on = True
            elif kind == "deliver":
                change, sequence, webhook = payload
                await world.licenses(
                    "c-1", change.count, sequence=sequence, effective=day_of(change.effective), webhook_id=webhook
                )
            elif kind == "price":
                company_level, price = payload
                if company_level:
                    override = price
                    await world.call("PATCH", "/api/v1/companies/c-1/billing", json={"unit_price": str(price)})
                else:
                    default = price
                    await world.call("PATCH", "/api/v1/billing/product", json={"unit_price": str(price)})
                truth.prices.append((day_of(day), override if override is not None else default))
            elif kind == "disable" and billing_on:
                await world.call("PATCH", "/api/v1/companies/c-1/billing", json={"enabled": False})
                truth.billing.append((day_of(day), False))
                billing_on = False
            elif kind == "enable" and not billing_on:
                await world.call("PATCH", "/api/v1/companies/c-1/billing", json={"enabled": True})
                truth.billing.append((day_of(day), True))
                billing_on = True
            elif kind == "move":
                agreements.append(world.agreement(1, start=START, name="Managed Services 2"))
                await world.call(
                    "PUT", "/api/v1/companies/c-1/mapping", json={"cw_company_id": 1, "cw_agreement_id": agreements[-1]}
                )
            elif kind == "cancel":
                world.cancel_agreement(agreements[-1])
            elif kind == "remap":
                agreements.append(world.agreement(1, start=START, name="Managed Services (new)"))
                await world.call(
                    "PUT", "/api/v1/companies/c-1/mapping", json={"cw_company_id": 1, "cw_agreement_id": agreements[-1]}
                )
        await _work(world, s)
        if any(order >= 4 and kind == "invoice" for order, kind, _ in todays):
            for agreement in agreements:
                world.invoice_due(agreement)
    for agreement in agreements:  # what is due by the end has been invoiced
        world.invoice_due(agreement)
    async with world.ctx.sessionmaker() as session:
        pk = await session.scalar(select(Company.id).where(Company.external_id == "c-1"))
    assert pk is not None
    invoiced = world.invoiced_for(pk, adopted=adopted_ids)
    return Result(
        invoiced=invoiced, owed=owed_through(truth, START, end), through=end, unexplained=unexplained_lines(world, pk)
    )


def unexplained_lines(world: World, company_pk: str) -> list[str]:
    """Every invoice line written for the company whose text does not account for its amount, and why."""
    key = company_key(company_pk)
    found = []
    for record in world.sandbox.invoicing.records.values():
        for line in record.lines:
            marker = parse(line.serial_number)
            if marker is None or marker.key != key:
                continue
            why = why_unexplained(str(marker.kind), line.description or "", line.amount, line.quantity, line.unit_price)
            if why:
                found.append(f"invoice {record.invoice_id} ({record.period.start}): {why}")
    return found


async def _work(world: World, s: Scenario) -> None:
    """The worker's day: approve what waits for approval (review mode), let it run; CW failing at the scenario's
    rate while it does."""
    world.sandbox.faults.rate = s.fault_rate
    for _ in range(6):
        await world.work()
        if not s.review:
            break
        pending = await world.call("GET", "/api/v1/reconciliation")
        if not any(row["pending_change_set"] for row in pending["items"]):
            break
        await world.call("POST", "/api/v1/reconciliation/approve", json={})
    world.sandbox.faults.rate = 0.0
    await world.work()  # CW healthy again: whatever was retrying settles today
