"""Regression tests for issue 16's worker and write-safety items, each checked as the MSP (or CW) would notice it:

* item 6: a lease is renewed while its job works (at every step, and during a CW call that outlasts a lease) and
  fenced: a worker that lost its company writes nothing more to CW, records nothing, and leaves the new holder's claim
  alone;
* item 17: a killed worker's companies are taken over by a new worker one lease later, and end in sync;
* item 8: a job failing with a non-CW error is parked after `MAX_ATTEMPTS`, not retried forever;
* item 18: a PATCH whose answer was lost is read back as the service's own write, though CW answers `17.2` for the
  `17.20` it sent (money compared as values, not text);
* item 19: a write the client gave up on (timeout) that CW applies late, over a newer write, is recognised as the
  service's own and corrected, not held as drift.

The in-process sandbox, the business clock frozen in November (leases count on it); SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stamina
from sqlalchemy import select

from app.connectwise.client import ConnectWiseClient
from app.connectwise.sandbox.app import Sandbox, SandboxTransport
from app.connectwise.sandbox.credentials import SANDBOX_CREDENTIALS
from app.context import AppContext
from app.db.models import SyncState, TrackedAddition
from app.domain.markers import Kind, parse
from app.services.tenants import create_client
from app.sync.worker import MAX_ATTEMPTS, CircuitBreaker, Claim, Worker
from tests.sync.bulk import Fleet, change, day, fleet

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)  # the worker's default lease, as `cw-billing-sync worker` runs it

StatusOf = Callable[[Fleet], Awaitable[dict[str, Any]]]


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture(autouse=True)
def november(ctx: AppContext) -> None:
    ctx.clock.freeze(NOW)


@pytest.fixture
def status_of(ctx: AppContext, client: httpx.AsyncClient) -> StatusOf:
    """`GET /api/v1/companies/c-0/sync`, as the MSP reads it."""

    async def get(group: Fleet) -> dict[str, Any]:
        async with ctx.sessionmaker() as s, s.begin():
            issued = await create_client(s, tenant_id=group.tenant_id)
        token = await client.post(
            "/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": issued.client_id,
                "client_secret": issued.client_secret,
            },
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        response = await client.get("/api/v1/companies/c-0/sync", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return get


def make_worker(ctx: AppContext, worker_id: str, **kwargs: Any) -> Worker:
    clock = ctx.clock
    return Worker(
        ctx,
        worker_id=worker_id,
        full_reconcile_every=None,
        breaker=CircuitBreaker(clock=lambda: clock.now().timestamp()),
        **kwargs,
    )


async def work(ctx: AppContext, worker: Worker, *, rounds: int = 50) -> None:
    """Work until nothing is due within six hours, moving the clock past each backoff."""
    limit = ctx.now() + timedelta(hours=6)
    for _ in range(rounds):
        if await worker.run_once():
            continue
        async with ctx.sessionmaker() as s:
            waiting = [d for d in await s.scalars(select(SyncState.due_at)) if d is not None and d <= limit]
        if not waiting:
            return
        ctx.clock.freeze(max(ctx.now(), min(waiting)) + timedelta(seconds=1))
    raise AssertionError("the queue never drained")


async def state_of(ctx: AppContext, company_pk: str) -> SyncState:
    async with ctx.sessionmaker() as s:
        state = await s.get(SyncState, company_pk)
    assert state is not None
    return state


def lines_of(sandbox: Sandbox, agreement_id: int) -> dict[Kind, dict[str, Any]]:
    """The company's lines in CW by kind; fails on a marker found twice (a line created twice)."""
    additions = sandbox.store.additions_of(agreement_id)
    serials = Counter(a["serialNumber"] for a in additions)
    assert [s for s, n in serials.items() if n > 1] == [], "a line was created twice"
    found = {}
    for addition in additions:
        marker = parse(addition["serialNumber"])
        assert marker is not None
        found[marker.kind] = addition
    return found


async def one_company(ctx: AppContext, sandbox: Sandbox) -> tuple[Fleet, str, int]:
    """c-0, billed on its own agreement from 1 November with 5 licenses from 1 November, not yet written to CW: its
    reconcile creates two lines (November's proration, December's base). (group, company pk, agreement id)"""
    group = await fleet(ctx, sandbox, companies=1)
    await change(ctx, group.tenant_id, "c-0", 5, sequence=1, effective_at=day(1))
    return group, group.company_pks["c-0"], group.companies["c-0"]


# ---------------------------------------------------------------------------------------------------- item 6
@pytest.mark.parametrize(("step", "written_by_a"), [("before_read", 0), ("after_cw_write", 1)])
async def test_a_worker_that_lost_its_lease_writes_nothing_more_and_leaves_the_new_claim_alone(
    sandbox: Sandbox, ctx: AppContext, step: str, written_by_a: int
) -> None:
    _, pk, agreement = await one_company(ctx, sandbox)
    b = make_worker(ctx, "worker-b")
    taken: list[Claim] = []

    async def stall(at: str) -> None:
        if at == step and not taken:
            ctx.clock.advance(LEASE + timedelta(seconds=1))  # A stalls past its lease here (a slow call, a GC pause)…
            taken.extend(await b.claim())  # …and B takes the company over

    a = make_worker(ctx, "worker-a", crash=stall)
    await a.run_once()
    assert [c.company_id for c in taken] == [pk]
    # A stopped at its next write: nothing more reached CW, and nothing of its job was recorded.
    assert sandbox.store.writes == written_by_a
    state = await state_of(ctx, pk)
    assert (state.claimed_by, state.claimed_until) == ("worker-b", ctx.now() + LEASE)
    assert (state.last_attempt_at, state.attempts, state.status) == (None, 0, "pending")
    await b.handle(taken[0])
    # B found A's line (if any) by its marker: each line exists once, and was written once.
    assert set(lines_of(sandbox, agreement)) == {Kind.proration, Kind.base}
    assert sandbox.store.writes == 2
    state = await state_of(ctx, pk)
    assert (state.status, state.due_at, state.claimed_by) == ("in_sync", None, None)


async def test_a_worker_that_lost_its_lease_records_no_outcome_over_the_new_holders_claim(
    sandbox: Sandbox, ctx: AppContext
) -> None:
    _, pk, agreement = await one_company(ctx, sandbox)
    await work(ctx, make_worker(ctx, "worker-0"))  # in sync: a periodic reconcile now has nothing to write
    writes = sandbox.store.writes
    b = make_worker(ctx, "worker-b")
    taken: list[Claim] = []

    async def stall(at: str) -> None:
        if at == "before_read" and not taken:
            ctx.clock.advance(LEASE + timedelta(seconds=1))
            taken.extend(await b.claim())

    a = make_worker(ctx, "worker-a", crash=stall)
    await a.schedule_full_reconcile()
    await a.run_once()  # A's reconcile finds nothing to write and ends with an outcome to record
    assert [c.company_id for c in taken] == [pk]
    state = await state_of(ctx, pk)
    assert (state.claimed_by, state.claimed_until) == ("worker-b", ctx.now() + LEASE)  # not cleared by A
    assert state.due_at is not None  # still due: B's reconcile has not run yet
    assert await make_worker(ctx, "worker-c").claim() == []  # so no third worker can take it meanwhile
    await b.handle(taken[0])
    state = await state_of(ctx, pk)
    assert (state.status, state.due_at, state.claimed_by) == ("in_sync", None, None)
    assert sandbox.store.writes == writes
    assert set(lines_of(sandbox, agreement)) == {Kind.proration, Kind.base}


async def test_a_job_slower_than_its_lease_keeps_its_company_while_it_works(sandbox: Sandbox, ctx: AppContext) -> None:
    _, pk, agreement = await one_company(ctx, sandbox)
    b = make_worker(ctx, "worker-b")
    stolen: list[Claim] = []

    async def slow(at: str) -> None:
        if at in ("before_read", "after_cw_write", "after_commit"):
            ctx.clock.advance(timedelta(seconds=50))  # every CW call and commit of the job takes 50 s
            stolen.extend(await b.claim())  # another worker keeps trying to take the company

    a = make_worker(ctx, "worker-a", crash=slow)
    await a.run_once()
    assert ctx.now() - NOW > 4 * LEASE  # the job outlived its first lease four times over
    assert stolen == []  # renewed at every step: nobody could take the company while it worked
    state = await state_of(ctx, pk)
    assert (state.status, state.due_at, state.claimed_by) == ("in_sync", None, None)
    assert set(lines_of(sandbox, agreement)) == {Kind.proration, Kind.base}
    assert sandbox.store.writes == 2


class SlowLink(httpx.AsyncBaseTransport):
    """The way to CW, where the first create spends `rounds` × `step` of business time in transit (a wait for the
    request budget, a slow answer) while real time passes too; after each step `meanwhile` runs."""

    def __init__(
        self,
        ctx: AppContext,
        sandbox: Sandbox,
        *,
        rounds: int,
        step: timedelta,
        meanwhile: Callable[[], Awaitable[None]],
    ):
        self.ctx, self.rounds, self.step, self.meanwhile = ctx, rounds, step, meanwhile
        self.cw = SandboxTransport(sandbox)
        self.delayed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not self.delayed:
            self.delayed = 1
            for _ in range(self.rounds):
                self.ctx.clock.advance(self.step)
                await self.meanwhile()
        return await self.cw.handle_async_request(request)


async def test_a_create_in_flight_longer_than_the_lease_is_not_created_again_by_another_worker(
    sandbox: Sandbox,
    ctx: AppContext,
) -> None:
    _, pk, agreement = await one_company(ctx, sandbox)
    lease = timedelta(seconds=0.6)  # short, so that renewing every third of it happens within the test
    b = make_worker(ctx, "worker-b", lease=lease)
    taken: list[int] = []

    async def meanwhile() -> None:
        # Real time passes as well (until A's worker renewed its lease at the current business time; 1.5 s at most) …
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while (await state_of(ctx, pk)).claimed_until != ctx.now() + lease:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        taken.append(await b.run_once())  # … and another worker tries to take the company and do its work

    link = SlowLink(ctx, sandbox, rounds=4, step=timedelta(seconds=0.4), meanwhile=meanwhile)
    http = httpx.AsyncClient(transport=link)
    a = make_worker(
        ctx,
        "worker-a",
        lease=lease,
        client_factory=lambda _t: ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=3),
    )
    try:
        await a.run_once()
    finally:
        await http.aclose()
    assert link.delayed
    assert ctx.now() - NOW > 2 * lease  # the create was in flight for more than two leases
    assert taken == [0, 0, 0, 0]  # nobody could take the company while A's create was on its way
    assert set(lines_of(sandbox, agreement)) == {Kind.proration, Kind.base}  # each line created once
    assert sandbox.store.writes == 2
    state = await state_of(ctx, pk)
    assert (state.status, state.due_at, state.claimed_by) == ("in_sync", None, None)


# ---------------------------------------------------------------------------------------------------- item 17
async def test_a_killed_workers_companies_are_taken_over_one_lease_later_and_end_in_sync(
    sandbox: Sandbox, ctx: AppContext
) -> None:
    group = await fleet(ctx, sandbox, companies=3)
    for i in range(3):
        await change(ctx, group.tenant_id, f"c-{i}", 4 + i, sequence=1, effective_at=day(3))
    # Never set: the process is gone. (A blocked task stands in for the killed process; its lease keeper would only
    # renew after a third of the lease, 20 s of real time, which this test never takes.)
    dead = asyncio.Event()
    stuck: list[str] = []

    async def killed(at: str) -> None:
        if at == "after_cw_write":  # killed after CW applied its first create, before the commit recording it
            stuck.append(at)
            await dead.wait()

    a = make_worker(ctx, "worker-a", crash=killed)
    task = asyncio.create_task(a.run_once())
    try:
        async with asyncio.timeout(10):
            while len(stuck) < 3:  # noqa: ASYNC110 (waiting for the three jobs to reach their fatal step)
                await asyncio.sleep(0.01)
        assert sandbox.store.writes == 3
        b = make_worker(ctx, "worker-b")  # the restarted process: a worker id of its own
        assert await b.run_once() == 0  # A's leases still run: nothing is taken from a live lease
        ctx.clock.advance(LEASE - timedelta(seconds=1))
        assert await b.run_once() == 0
        ctx.clock.advance(timedelta(seconds=2))  # one lease after A's last renewal
        assert await b.run_once() == 3
        await work(ctx, b)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for external, agreement in group.companies.items():
        lines = lines_of(sandbox, agreement)  # A's lines were found by their markers, not created again
        assert set(lines) == {Kind.proration, Kind.base}
        assert lines[Kind.base]["quantity"] == 4 + int(external.removeprefix("c-"))
    assert sandbox.store.writes == 6
    async with ctx.sessionmaker() as s:
        states = list(await s.scalars(select(SyncState)))
    assert {(st.status, st.due_at, st.claimed_by) for st in states} == {("in_sync", None, None)}


# ---------------------------------------------------------------------------------------------------- item 8
async def test_a_job_failing_with_a_non_cw_error_is_parked_after_max_attempts(
    sandbox: Sandbox, ctx: AppContext, status_of: StatusOf
) -> None:
    group, _, agreement = await one_company(ctx, sandbox)
    poisoned = {"on": True, "attempts": 0}

    async def poison(at: str) -> None:
        if at == "before_read" and poisoned["on"]:
            poisoned["attempts"] += 1
            raise RuntimeError("a bug, not a ConnectWise error")

    worker = make_worker(ctx, "worker-a", crash=poison)
    await work(ctx, worker)  # retried with backoff (each wait under 15 min): without a bound it never gets quiet
    assert poisoned["attempts"] == MAX_ATTEMPTS
    status = await status_of(group)
    assert (status["status"], status["due"], status["attempts"]) == ("failed", False, MAX_ATTEMPTS)
    assert status["last_error"] == "RuntimeError: a bug, not a ConnectWise error"
    failed = ctx.metrics.registry.get_sample_value("cwbs_sync_jobs_total", {"outcome": "failed"})
    assert failed == 1
    assert sandbox.store.writes == 0
    # Parked, not lost: once the cause is gone, the company's next change brings it back.
    poisoned["on"] = False
    await change(ctx, group.tenant_id, "c-0", 6, sequence=2, effective_at=day(25))
    await work(ctx, worker)
    status = await status_of(group)
    assert (status["status"], status["due"], status["attempts"]) == ("in_sync", False, 0)
    assert lines_of(sandbox, agreement)[Kind.base]["quantity"] == 6


# ---------------------------------------------------------------------------------------------------- item 18
async def test_a_patch_whose_answer_was_lost_is_read_back_as_ours_though_cw_drops_the_trailing_zero(
    sandbox: Sandbox, ctx: AppContext, status_of: StatusOf
) -> None:
    group, pk, agreement = await one_company(ctx, sandbox)
    worker = make_worker(ctx, "worker-a")
    await work(ctx, worker)
    proration = lines_of(sandbox, agreement)[Kind.proration]
    assert proration["unitPrice"] == 15  # 5 × 3.00 for November
    # 7 licenses from 20 Nov: November's line becomes 5 × 3.00 × 19/30 + 7 × 3.00 × 11/30 = 9.50 + 7.70 = 17.20.
    await change(ctx, group.tenant_id, "c-0", 7, sequence=2, effective_at=day(20))
    sandbox.inject("lost_response", method="PATCH", path=rf"/additions/{proration['id']}$", times=3)
    await worker.run_once()
    assert not sandbox.scripted  # every attempt reached CW and was applied; no answer came back
    assert (await status_of(group))["status"] == "retrying"
    assert sandbox.store.additions.get(proration["id"])["unitPrice"] == 17.2  # CW answers it as `17.2`
    async with ctx.sessionmaker() as s:
        row = await s.scalar(select(TrackedAddition).where(TrackedAddition.cw_addition_id == proration["id"]))
    assert row is not None
    assert row.uncertain is not None
    assert row.uncertain[-1]["unit_price"] == "17.20"  # what the service sent, recorded as unanswered
    # 8 licenses from 24 Nov before the retry: the line must be written again, so the service first checks that CW
    # holds what it wrote: 17.2 is the 17.20 it sent, not a hand edit. 9.50 + 7 × 3.00 × 4/30 + 8 × 3.00 × 7/30
    # = 9.50 + 2.80 + 5.60 = 17.90.
    await change(ctx, group.tenant_id, "c-0", 8, sequence=3, effective_at=day(24))
    await work(ctx, worker)
    status = await status_of(group)
    assert (status["status"], status["drift"], status["last_error"]) == ("in_sync", None, None)
    lines = lines_of(sandbox, agreement)
    assert (lines[Kind.proration]["unitPrice"], lines[Kind.base]["quantity"]) == (17.9, 8)
    # And the next full reconcile reads `17.9` back as the 17.90 it wrote: no drift, nothing written.
    writes = sandbox.store.writes
    await worker.schedule_full_reconcile()
    await work(ctx, worker)
    status = await status_of(group)
    assert (status["status"], status["drift"]) == ("in_sync", None)
    assert sandbox.store.writes == writes
    assert (await state_of(ctx, pk)).discrepancies == 0


# ---------------------------------------------------------------------------------------------------- item 19
class LateLink(httpx.AsyncBaseTransport):
    """The way to CW, where PATCHes of one addition get no answer in time (the client gives up) and reach CW only
    when `land()` says so."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.cw = SandboxTransport(sandbox)
        self.slow_path: str | None = None
        self.in_flight: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.slow_path is not None and request.method == "PATCH" and request.url.path.endswith(self.slow_path):
            await request.aread()
            self.in_flight.append(request)
            raise httpx.ReadTimeout("no answer in time", request=request)
        return await self.cw.handle_async_request(request)

    async def land(self) -> None:
        """The first of the requests the client gave up on reaches CW now, and is applied."""
        response = await self.cw.handle_async_request(self.in_flight.pop(0))
        assert response.status_code == 200


@pytest.fixture
async def late_link(sandbox: Sandbox) -> AsyncIterator[LateLink]:
    link = LateLink(sandbox)
    yield link
    await link.cw.aclose()


async def test_a_write_cw_applies_after_the_client_gave_up_is_ours_and_corrected_not_drift(
    sandbox: Sandbox, ctx: AppContext, status_of: StatusOf, late_link: LateLink
) -> None:
    group, _, agreement = await one_company(ctx, sandbox)
    http = httpx.AsyncClient(transport=late_link)
    worker = make_worker(
        ctx, "worker-a", client_factory=lambda _t: ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=3)
    )
    try:
        await work(ctx, worker)
        base = lines_of(sandbox, agreement)[Kind.base]
        assert base["quantity"] == 5
        # 7 licenses from 20 Nov: December's base line is patched to 7, but no answer comes in time.
        await change(ctx, group.tenant_id, "c-0", 7, sequence=2, effective_at=day(20))
        late_link.slow_path = f"/additions/{base['id']}"
        await worker.run_once()
        assert late_link.in_flight  # the client gave up on it …
        assert sandbox.store.additions.get(base["id"])["quantity"] == 5  # … and CW has not applied it (yet)
        assert (await status_of(group))["status"] == "retrying"
        late_link.slow_path = None
        # 9 licenses from 22 Nov: the base line is patched to 9, and this time the answer comes.
        ctx.clock.advance(timedelta(hours=1))
        await change(ctx, group.tenant_id, "c-0", 9, sequence=3, effective_at=day(22))
        await work(ctx, worker)
        assert sandbox.store.additions.get(base["id"])["quantity"] == 9
        # Now the old PATCH reaches CW, and overwrites the newer write with its 7.
        await late_link.land()
        assert sandbox.store.additions.get(base["id"])["quantity"] == 7
        # The next full reconcile knows 7 as a value it sent itself, not a hand edit: it writes 9 again.
        await worker.schedule_full_reconcile()
        await work(ctx, worker)
    finally:
        await http.aclose()
    status = await status_of(group)
    assert (status["status"], status["drift"], status["last_error"]) == ("in_sync", None, None)
    assert sandbox.store.additions.get(base["id"])["quantity"] == 9
