"""The sync engine under faults — CW failing at random, crashes at every step, outages, hand edits, review mode —
and what is then invoiced: checked against the plain reference of DESIGN §5 (`tests/sim/reference.py`), never
against the code under test."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import stamina
from sqlalchemy import select, update

from app.connectwise.client import ConnectWiseClient
from app.connectwise.sandbox.app import Sandbox, SandboxTransport
from app.connectwise.sandbox.credentials import SANDBOX_CREDENTIALS
from app.context import AppContext
from app.db.models import SyncState
from app.domain.markers import Kind, company_key, parse
from app.services.sync_schedule import requeue_stuck
from app.sync.worker import CircuitBreaker, Worker
from tests.sim.reference import Truth, count_at_end_of, owed
from tests.sync.bulk import PRICE, START, Fleet, change, day, fleet

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Crash(Exception):
    pass


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture(autouse=True)
def november(ctx: AppContext) -> None:
    ctx.clock.freeze(NOW)


def make_worker(ctx: AppContext, **kwargs: Any) -> Worker:
    clock = ctx.clock
    return Worker(
        ctx,
        full_reconcile_every=None,
        breaker=CircuitBreaker(clock=lambda: clock.now().timestamp()),
        **kwargs,
    )


async def run_until_quiet(ctx: AppContext, workers: list[Worker], *, rounds: int = 400) -> None:
    """Work, and let time pass (past every backoff, at most a few hours) whenever nothing is due now."""
    limit = ctx.now() + timedelta(hours=6)
    for _ in range(rounds):
        handled = sum(await asyncio.gather(*(w.run_once() for w in workers)))
        if handled:
            continue
        async with ctx.sessionmaker() as s:
            waiting = [d for d in await s.scalars(select(SyncState.due_at)) if d is not None and d <= limit]
        if not waiting:
            return
        ctx.clock.freeze(max(ctx.now(), min(waiting)) + timedelta(seconds=1))
    raise AssertionError("the queue never drained")


class Portal:
    """What the portal said, per company, for the reference to compute from."""

    def __init__(self) -> None:
        self.changes: dict[str, list[tuple[date, int, int]]] = {}

    async def send(
        self, ctx: AppContext, group: Fleet, company: str, count: int, *, sequence: int, effective_at: datetime
    ) -> None:
        self.changes.setdefault(company, []).append((effective_at.date(), sequence, count))
        await change(ctx, group.tenant_id, company, count, sequence=sequence, effective_at=effective_at)

    def truth(self, company: str) -> Truth:
        return Truth(
            changes=list(self.changes.get(company, [])),
            prices=[(START - timedelta(days=1), PRICE)],
            billing=[(START - timedelta(days=1), True)],
        )


def invoice_december(ctx: AppContext, sandbox: Sandbox, group: Fleet) -> dict[str, Decimal]:
    """Run agreement invoicing on 2 December (November, then December); what it billed per company."""
    ctx.clock.freeze(datetime(2026, 12, 2, 8, tzinfo=UTC))
    for agreement in group.companies.values():
        for _ in range(2):
            sandbox.invoicing.invoice(agreement)
    billed: dict[str, Decimal] = {}
    keys = {company_key(pk): external for external, pk in group.company_pks.items()}
    for record in sandbox.invoicing.records.values():
        for line in record.lines:
            marker = parse(line.serial_number)
            if marker is not None and marker.key in keys:
                billed[keys[marker.key]] = billed.get(keys[marker.key], Decimal(0)) + line.amount
    return billed


async def assert_invoice_true(ctx: AppContext, sandbox: Sandbox, group: Fleet, portal: Portal) -> None:
    serials = Counter(a.get("serialNumber") for a in sandbox.store.additions.rows.values())
    assert [s for s, n in serials.items() if n > 1] == [], "duplicated additions"
    async with ctx.sessionmaker() as s:
        states = list(await s.scalars(select(SyncState).where(SyncState.tenant_id == group.tenant_id)))
    assert {(st.status, st.due_at) for st in states} == {("in_sync", None)}, [st.last_error for st in states]
    billed = invoice_december(ctx, sandbox, group)
    for company in group.companies:
        truth = portal.truth(company)
        # November (billed with December's invoice) and December's base, in advance.
        expected = owed(truth, date(2026, 11, 1)) + count_at_end_of(truth, date(2026, 11, 30)) * PRICE
        assert billed.get(company, Decimal(0)) == expected, company


async def test_1000_changes_over_100_companies_converge_with_30_percent_faults(
    sandbox: Sandbox, ctx: AppContext
) -> None:
    group = await fleet(ctx, sandbox, companies=100)
    portal = Portal()
    rng = random.Random(42)
    sequences: Counter[str] = Counter()
    for _ in range(1000):
        company = f"c-{rng.randrange(100)}"
        sequences[company] += 1
        await portal.send(
            ctx,
            group,
            company,
            rng.randrange(0, 60),
            sequence=sequences[company],
            effective_at=day(rng.randrange(1, 26), rng.randrange(0, 24)),
        )
    sandbox.faults.rate = 0.3
    sandbox.faults.seed = 7
    sandbox.faults.__post_init__()
    await run_until_quiet(ctx, [make_worker(ctx)])
    faults = {k: v for k, v in sandbox.stats.items() if k.startswith("fault:")}
    assert sum(faults.values()) >= 0.25 * sandbox.stats["requests"], faults  # ~30% of calls really failed
    assert set(faults) == {f"fault:{k}" for k in ("429", "500", "503", "timeout", "lost_response")}
    sandbox.faults.rate = 0
    await assert_invoice_true(ctx, sandbox, group, portal)


@pytest.mark.parametrize("step", ["before_read", "before_cw_write", "after_cw_write", "after_commit"])
async def test_a_crash_at_any_step_leaves_no_duplicate_and_bills_right(
    sandbox: Sandbox, ctx: AppContext, step: str
) -> None:
    group = await fleet(ctx, sandbox, companies=3)
    portal = Portal()
    for i in range(3):
        await portal.send(ctx, group, f"c-{i}", 4 + i, sequence=1, effective_at=day(10))
    crashes = {"left": 6}

    async def crash(at: str) -> None:
        if at == step and crashes["left"] > 0:
            crashes["left"] -= 1
            raise Crash(at)

    await run_until_quiet(ctx, [make_worker(ctx, crash=crash)])
    assert crashes["left"] < 6  # the crash really happened
    await assert_invoice_true(ctx, sandbox, group, portal)


async def test_random_crashes_and_faults_together_still_converge(sandbox: Sandbox, ctx: AppContext) -> None:
    group = await fleet(ctx, sandbox, companies=30)
    portal = Portal()
    rng = random.Random(5)
    for i in range(30):
        for seq in range(1, 5):
            await portal.send(
                ctx, group, f"c-{i}", rng.randrange(1, 40), sequence=seq, effective_at=day(rng.randrange(1, 26))
            )
    sandbox.faults.rate, sandbox.faults.seed = 0.2, 11
    sandbox.faults.__post_init__()

    async def crash(_at: str) -> None:
        if rng.random() < 0.15:
            raise Crash(_at)

    await run_until_quiet(ctx, [make_worker(ctx, crash=crash)])
    sandbox.faults.rate = 0
    # A company whose job crashed MAX_ATTEMPTS times in a row was parked as a poison job (as it should be); with the
    # cause gone, the operator's bulk retry brings it back, as POST /reconciliation/retry does.
    async with ctx.sessionmaker() as s, s.begin():
        await requeue_stuck(s, tenant_id=group.tenant_id, reason="manual_retry", at=ctx.now())
    await run_until_quiet(ctx, [make_worker(ctx)])
    await assert_invoice_true(ctx, sandbox, group, portal)


async def test_fifty_changes_in_a_second_cost_at_most_three_writes(sandbox: Sandbox, ctx: AppContext) -> None:
    group = await fleet(ctx, sandbox, companies=1)
    portal = Portal()
    await portal.send(ctx, group, "c-0", 5, sequence=1, effective_at=day(2))
    await run_until_quiet(ctx, [make_worker(ctx)])

    def calls() -> int:  # every HTTP call to CW, the codebase lookup included
        return sandbox.stats["requests"] + sandbox.stats["companyinfo"]

    writes, requests = sandbox.store.writes, calls()
    for seq in range(2, 52):
        await portal.send(ctx, group, "c-0", 5 + seq, sequence=seq, effective_at=day(16, 14))
    await run_until_quiet(ctx, [make_worker(ctx)])
    assert sandbox.store.writes - writes <= 2  # the proration line and December's base line
    assert calls() - requests <= 3
    await assert_invoice_true(ctx, sandbox, group, portal)


async def test_a_hand_edit_is_drift_and_is_not_overwritten_under_hold(sandbox: Sandbox, ctx: AppContext) -> None:
    group = await fleet(ctx, sandbox, companies=1)
    portal = Portal()
    await portal.send(ctx, group, "c-0", 5, sequence=1, effective_at=day(1))
    worker = make_worker(ctx)
    await run_until_quiet(ctx, [worker])
    base = next(
        a
        for a in sandbox.store.additions_of(group.companies["c-0"])
        if (marker := parse(a["serialNumber"])) is not None and marker.kind is Kind.base
    )
    sandbox.store.additions.get(base["id"])["quantity"] = 42  # someone fixed it by hand in CW
    await worker.schedule_full_reconcile()
    await run_until_quiet(ctx, [worker])
    async with ctx.sessionmaker() as s:
        state = (await s.scalars(select(SyncState))).one()
    assert state.status == "drift"
    assert state.drift is not None
    assert "quantity 5 → 42" in state.drift[0]["detail"]
    assert sandbox.store.additions.get(base["id"])["quantity"] == 42
    # A later license change is not allowed to silently reset the hand edit either.
    await portal.send(ctx, group, "c-0", 6, sequence=2, effective_at=day(20))
    await run_until_quiet(ctx, [worker])
    assert sandbox.store.additions.get(base["id"])["quantity"] == 42
    # Overwriting is an explicit, one-time decision.
    async with ctx.sessionmaker() as s, s.begin():
        await s.execute(update(SyncState).values(due_at=ctx.now(), reason="drift_overwrite"))
    await run_until_quiet(ctx, [worker])
    assert sandbox.store.additions.get(base["id"])["quantity"] == 6
    await assert_invoice_true(ctx, sandbox, group, portal)


class DownTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


async def test_cw_down_for_an_hour_drops_nothing_and_other_tenants_keep_syncing(
    sandbox: Sandbox, ctx: AppContext
) -> None:
    down, up = (
        await fleet(ctx, sandbox, companies=3, name="Down MSP"),
        await fleet(ctx, sandbox, companies=3, name="Up MSP"),
    )
    portals = {down.tenant_id: Portal(), up.tenant_id: Portal()}
    outage = {"on": True}
    http_down = httpx.AsyncClient(transport=DownTransport())
    http_up = httpx.AsyncClient(transport=SandboxTransport(sandbox))

    def client_for(tenant_id: str) -> ConnectWiseClient:
        http = http_down if tenant_id == down.tenant_id and outage["on"] else http_up
        return ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=3)

    worker = make_worker(ctx, client_factory=client_for)
    for group in (down, up):
        for i in range(3):
            await portals[group.tenant_id].send(ctx, group, f"c-{i}", 7, sequence=1, effective_at=day(12))
    end = ctx.now() + timedelta(hours=1)
    while ctx.now() < end:  # an hour of CW being down for one tenant
        await worker.run_once()
        ctx.clock.advance(timedelta(minutes=2))
    async with ctx.sessionmaker() as s:
        waiting = list(await s.scalars(select(SyncState).where(SyncState.tenant_id == down.tenant_id)))
        fine = list(await s.scalars(select(SyncState).where(SyncState.tenant_id == up.tenant_id)))
    assert all(w.status == "retrying" and w.due_at is not None for w in waiting)
    assert all("ConnectWise" in (w.last_error or "") for w in waiting)
    assert {f.status for f in fine} == {"in_sync"}
    outage["on"] = False
    await run_until_quiet(ctx, [worker])
    await assert_invoice_true(ctx, sandbox, up, portals[up.tenant_id])
    await http_down.aclose()
    await http_up.aclose()


async def test_a_400_parks_the_job_after_one_call_with_cws_message(sandbox: Sandbox, ctx: AppContext) -> None:
    group = await fleet(ctx, sandbox, companies=1)
    sandbox.store.catalog.get(1)["inactiveFlag"] = True
    await change(ctx, group.tenant_id, "c-0", 3, sequence=1, effective_at=day(3))
    await run_until_quiet(ctx, [make_worker(ctx)])
    assert sandbox.stats["POST /finance/agreements/{id}/additions"] == 1
    async with ctx.sessionmaker() as s:
        state = (await s.scalars(select(SyncState))).one()
    assert state.status == "failed"
    assert state.due_at is None
    assert state.last_error is not None
    assert "product is inactive" in state.last_error


async def test_review_mode_writes_nothing_until_approved(sandbox: Sandbox, ctx: AppContext) -> None:
    group = await fleet(ctx, sandbox, companies=2, sync_mode="review")
    portal = Portal()
    await portal.send(ctx, group, "c-0", 9, sequence=1, effective_at=day(16))
    await portal.send(ctx, group, "c-1", 4, sequence=1, effective_at=day(20))
    worker = make_worker(ctx)
    await run_until_quiet(ctx, [worker])
    assert sandbox.store.writes == 0
    async with ctx.sessionmaker() as s:
        states = list(await s.scalars(select(SyncState)))
    assert {st.status for st in states} == {"awaiting_approval"}
    assert all(st.pending_plan and st.pending_plan["reason"] == "license_change" for st in states)
    async with ctx.sessionmaker() as s, s.begin():
        for st in await s.scalars(select(SyncState)):
            st.approved_generation, st.due_at = st.generation, ctx.now()
    await run_until_quiet(ctx, [worker])
    await assert_invoice_true(ctx, sandbox, group, portal)
