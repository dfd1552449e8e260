"""The sync engine under faults: CW failing at random, crashes at every step, outages, hand edits, review mode."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
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
from app.db.base import utcnow
from app.db.models import Company, SyncState, Tenant
from app.domain.periods import Period
from app.domain.proration import DecreasePolicy, period_charge
from app.services.billing_inputs import count_changes, ledger
from app.sync.worker import CircuitBreaker, Worker
from tests.sync.bulk import FakeClock, change, day, fleet
from tests.sync.helpers import NOW, by_role, money

NOVEMBER = Period(NOW.date().replace(day=1), NOW.date().replace(day=30))


class Crash(Exception):
    pass


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


def make_worker(ctx: AppContext, clock: FakeClock, **kwargs: Any) -> Worker:
    return Worker(
        ctx,
        now=clock,
        billing_now=lambda: NOW,
        full_reconcile_every=None,
        breaker=CircuitBreaker(clock=clock.monotonic),
        **kwargs,
    )


async def run_until_quiet(ctx: AppContext, workers: list[Worker], clock: FakeClock, *, rounds: int = 400) -> None:
    """Work, and let time pass (past every backoff) whenever nothing is due now, until nothing is due at all."""
    for _ in range(rounds):
        handled = sum(await asyncio.gather(*(w.run_once() for w in workers)))
        if handled:
            continue
        async with ctx.sessionmaker() as s:
            waiting = [d for d in await s.scalars(select(SyncState.due_at)) if d is not None]
        if not waiting:
            return
        clock.now = max(clock.now, min(waiting)) + timedelta(seconds=1)
    raise AssertionError("the queue never drained")


async def assert_converged(ctx: AppContext, sandbox: Sandbox, tenant_id: str, agreements: dict[str, int]) -> None:
    serials = Counter(a.get("serialNumber") for a in sandbox.store.additions.rows.values())
    assert [s for s, n in serials.items() if n > 1] == [], "duplicated additions"
    async with ctx.sessionmaker() as s:
        tenant = await s.get(Tenant, tenant_id)
        assert tenant is not None
        for external, agreement_id in agreements.items():
            company = await s.scalar(
                select(Company).where(Company.tenant_id == tenant_id, Company.external_id == external)
            )
            assert company is not None
            lines = by_role(sandbox, agreement_id)
            assert len(lines["base"]) == 1, f"{external}: base line lost or duplicated"
            base = lines["base"][0]
            assert (base["quantity"], money(base["unitPrice"]), money(base["unitCost"])) == (
                company.license_count,
                money("3.00"),
                money("1.25"),
            ), external
            changes, opening = count_changes(await ledger(s, company), tenant.timezone)
            charge = period_charge(
                period=NOVEMBER,
                changes=changes,
                opening_count=opening,
                unit_price=Decimal("3.00"),
                unit_cost=Decimal("1.25"),
                policy=DecreasePolicy.no_credit,
                currency="USD",
            )
            billed = [p for p in lines["proration"] if p["quantity"] != 0]
            if charge.amount == 0:
                assert billed == [], external
            else:
                assert len(billed) == 1, external
                assert money(billed[0]["unitPrice"]) == charge.amount, external
                assert money(billed[0]["unitCost"]) == charge.cost_amount, external
            state = await s.get(SyncState, company.id)
            assert state is not None
            assert (state.status, state.due_at) == ("in_sync", None), (external, state.last_error)


async def test_1000_changes_over_100_companies_converge_with_30_percent_faults(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=100)
    rng = random.Random(42)
    sequences: Counter[str] = Counter()
    for _ in range(1000):
        company = f"c-{rng.randrange(100)}"
        sequences[company] += 1
        await change(
            ctx,
            group.tenant_id,
            company,
            rng.randrange(0, 60),
            sequence=sequences[company],
            effective_at=day(rng.randrange(1, 26), rng.randrange(0, 24)),
        )
    sandbox.faults.rate = 0.3
    sandbox.faults.seed = 7
    sandbox.faults.__post_init__()
    clock = FakeClock(utcnow())
    await run_until_quiet(ctx, [make_worker(ctx, clock)], clock)
    faults = {k: v for k, v in sandbox.stats.items() if k.startswith("fault:")}
    assert sum(faults.values()) >= 0.25 * sandbox.stats["requests"], faults  # ~30% of calls really failed
    assert set(faults) == {f"fault:{k}" for k in ("429", "500", "503", "timeout", "lost_response")}
    sandbox.faults.rate = 0
    await assert_converged(ctx, sandbox, group.tenant_id, group.companies)


@pytest.mark.parametrize("step", ["before_read", "before_cw_write", "after_cw_write", "after_commit"])
async def test_a_crash_at_any_step_leaves_no_duplicate(ctx: AppContext, step: str) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=3)
    for i in range(3):
        await change(ctx, group.tenant_id, f"c-{i}", 4 + i, sequence=1, effective_at=day(10))
    crashes = {"left": 6}

    async def crash(at: str) -> None:
        if at == step and crashes["left"] > 0:
            crashes["left"] -= 1
            raise Crash(at)

    clock = FakeClock(utcnow())
    await run_until_quiet(ctx, [make_worker(ctx, clock, crash=crash)], clock)
    assert crashes["left"] < 6  # the crash really happened
    await assert_converged(ctx, sandbox, group.tenant_id, group.companies)


async def test_random_crashes_and_faults_together_still_converge(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=30)
    rng = random.Random(5)
    for i in range(30):
        for seq in range(1, 5):
            await change(
                ctx,
                group.tenant_id,
                f"c-{i}",
                rng.randrange(1, 40),
                sequence=seq,
                effective_at=day(rng.randrange(1, 26)),
            )
    sandbox.faults.rate, sandbox.faults.seed = 0.2, 11
    sandbox.faults.__post_init__()

    async def crash(_at: str) -> None:
        if rng.random() < 0.15:
            raise Crash(_at)

    clock = FakeClock(utcnow())
    await run_until_quiet(ctx, [make_worker(ctx, clock, crash=crash)], clock)
    sandbox.faults.rate = 0
    await assert_converged(ctx, sandbox, group.tenant_id, group.companies)


async def test_fifty_changes_in_a_second_cost_at_most_three_writes(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=1)
    await change(ctx, group.tenant_id, "c-0", 5, sequence=1, effective_at=day(2))
    clock = FakeClock(utcnow())
    await run_until_quiet(ctx, [make_worker(ctx, clock)], clock)

    def calls() -> int:  # every HTTP call to CW, the codebase lookup included
        return sandbox.stats["requests"] + sandbox.stats["companyinfo"]

    writes, requests = sandbox.store.writes, calls()
    for seq in range(2, 52):
        await change(ctx, group.tenant_id, "c-0", 5 + seq, sequence=seq, effective_at=day(16, 14))
    await run_until_quiet(ctx, [make_worker(ctx, clock)], clock)
    assert sandbox.store.writes - writes <= 3
    assert calls() - requests <= 3
    await assert_converged(ctx, sandbox, group.tenant_id, group.companies)


async def test_a_hand_edit_is_drift_and_is_not_overwritten_under_hold(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=1)
    await change(ctx, group.tenant_id, "c-0", 5, sequence=1, effective_at=day(1))
    clock = FakeClock(utcnow())
    worker = make_worker(ctx, clock)
    await run_until_quiet(ctx, [worker], clock)
    base = by_role(sandbox, group.companies["c-0"])["base"][0]
    sandbox.store.additions.get(base["id"])["quantity"] = 42  # someone fixed it by hand in CW
    await worker.schedule_full_reconcile()
    await run_until_quiet(ctx, [worker], clock)
    async with ctx.sessionmaker() as s:
        state = (await s.scalars(select(SyncState))).one()
    assert state.status == "drift"
    assert state.drift is not None
    assert "quantity 5 → 42" in state.drift[0]["detail"]
    assert sandbox.store.additions.get(base["id"])["quantity"] == 42
    # A later license change is not allowed to silently reset the hand edit either.
    await change(ctx, group.tenant_id, "c-0", 6, sequence=2, effective_at=day(20))
    await run_until_quiet(ctx, [worker], clock)
    assert sandbox.store.additions.get(base["id"])["quantity"] == 42
    # Overwriting is an explicit, one-time decision.
    async with ctx.sessionmaker() as s, s.begin():
        await s.execute(update(SyncState).values(due_at=clock.now, reason="drift_overwrite"))
    await run_until_quiet(ctx, [worker], clock)
    assert sandbox.store.additions.get(base["id"])["quantity"] == 6
    await assert_converged(ctx, sandbox, group.tenant_id, group.companies)


class DownTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


async def test_cw_down_for_an_hour_drops_nothing_and_other_tenants_keep_syncing(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    down, up = (
        await fleet(ctx, sandbox, companies=3, name="Down MSP"),
        await fleet(ctx, sandbox, companies=3, name="Up MSP"),
    )
    outage = {"on": True}
    http_down = httpx.AsyncClient(transport=DownTransport())
    http_up = httpx.AsyncClient(transport=SandboxTransport(sandbox))

    def client_for(tenant_id: str) -> ConnectWiseClient:
        http = http_down if tenant_id == down.tenant_id and outage["on"] else http_up
        return ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=3)

    clock = FakeClock(utcnow())
    worker = make_worker(ctx, clock, client_factory=client_for)
    for group in (down, up):
        for i in range(3):
            await change(ctx, group.tenant_id, f"c-{i}", 7, sequence=1, effective_at=day(12))
    end = clock.now + timedelta(hours=1)
    while clock.now < end:  # an hour of CW being down for one tenant
        await worker.run_once()
        clock.now += timedelta(minutes=2)
    await assert_converged(ctx, sandbox, up.tenant_id, up.companies)
    async with ctx.sessionmaker() as s:
        waiting = list(await s.scalars(select(SyncState).where(SyncState.tenant_id == down.tenant_id)))
    assert all(w.status == "retrying" and w.due_at is not None for w in waiting)
    assert all("ConnectWise" in (w.last_error or "") for w in waiting)
    outage["on"] = False
    await run_until_quiet(ctx, [worker], clock)
    await assert_converged(ctx, sandbox, down.tenant_id, down.companies)
    await http_down.aclose()
    await http_up.aclose()


async def test_a_400_parks_the_job_after_one_call_with_cws_message(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=1)
    sandbox.store.catalog.get(1)["inactiveFlag"] = True
    await change(ctx, group.tenant_id, "c-0", 3, sequence=1, effective_at=day(3))
    clock = FakeClock(utcnow())
    await run_until_quiet(ctx, [make_worker(ctx, clock)], clock)
    assert sandbox.stats["POST /finance/agreements/{id}/additions"] == 1
    async with ctx.sessionmaker() as s:
        state = (await s.scalars(select(SyncState))).one()
    assert state.status == "failed"
    assert state.due_at is None
    assert state.last_error is not None
    assert "product is inactive" in state.last_error


async def test_review_mode_writes_nothing_until_approved(ctx: AppContext) -> None:
    sandbox = ctx.sandbox
    assert sandbox is not None
    group = await fleet(ctx, sandbox, companies=2, sync_mode="review")
    await change(ctx, group.tenant_id, "c-0", 9, sequence=1, effective_at=day(16))
    await change(ctx, group.tenant_id, "c-1", 4, sequence=1, effective_at=day(20))
    clock = FakeClock(utcnow())
    worker = make_worker(ctx, clock)
    await run_until_quiet(ctx, [worker], clock)
    assert sandbox.store.writes == 0
    async with ctx.sessionmaker() as s:
        states = list(await s.scalars(select(SyncState)))
    assert {st.status for st in states} == {"awaiting_approval"}
    assert all(st.pending_plan and st.pending_plan["reason"] == "license_change" for st in states)
    async with ctx.sessionmaker() as s, s.begin():
        for st in await s.scalars(select(SyncState)):
            st.approved_generation, st.due_at = st.generation, clock.now
    await run_until_quiet(ctx, [worker], clock)
    await assert_converged(ctx, sandbox, group.tenant_id, group.companies)
