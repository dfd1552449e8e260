"""The worker: applies stored deliveries to the license history, claims due companies, reconciles them, records
the outcome.

* Applying: the applier (`app/services/applier.py`) first, every turn; the intake wakes it after each stored batch.
* Claiming: `FOR UPDATE SKIP LOCKED` on PostgreSQL (many workers), a single in-process worker on SQLite. A claim is
  a short lease, renewed at every step of the job and every third of a lease while it runs (a CW call, or a wait for
  the request budget, can outlast a lease), and checked before every CW write and commit (fencing): a worker that
  lost its lease writes nothing more, and a killed worker's companies come back within a lease.
* Coalescing: a reconcile plans from the whole history; if more changes arrived meanwhile (`generation` moved) the
  company stays due and runs once more.
* Failures: transient CW errors retry with exponential backoff and jitter (or CW's Retry-After); permanent ones
  (400/401/403/404/422) park the company as `failed` with CW's message; a cancelled, expired or deleted agreement
  makes it `needs_attention`; anything else retries, and is parked after `MAX_ATTEMPTS`. A tenant whose CW keeps
  failing is skipped for a while (circuit breaker) so other tenants keep syncing.
* Supervision: no error stops `run_forever`; it backs off and goes on, and `healthy` says whether its last turn
  succeeded (`/readyz`, the `cwbs_worker_healthy` gauge).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.client import ConnectWiseClient
from app.connectwise.errors import CWError, CWPermanentError, CWRetryableError, CWThrottledError
from app.connectwise.schemas import Agreement
from app.context import AppContext
from app.db.models import Company, CwConnection, SyncState, SyncStatus, Tenant
from app.errors import AppError
from app.logging import get_logger
from app.services.applier import apply_pending
from app.services.cw_connections import client_for
from app.services.deliveries import purge_inbox
from app.services.sync_schedule import schedule_tenant
from app.sync.reconcile import CrashHook, MappingStaleError, Outcome, Prepared, _no_crash, prepare, reconcile_company

log = get_logger("app.sync")
MAX_BACKOFF = 900.0
MAX_ATTEMPTS = 8  # a job failing for a reason retrying cannot fix is parked after this many attempts


class LeaseLostError(Exception):
    """Another worker holds the company now (our lease expired or was taken over): stop, write nothing more."""


@dataclass(frozen=True, slots=True)
class Claim:
    company_id: str
    tenant_id: str
    generation: int
    reason: str | None


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cool_down: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, int] = field(default_factory=dict)
    _open_until: dict[str, float] = field(default_factory=dict)

    def open_tenants(self) -> set[str]:
        now = self.clock()
        return {t for t, until in self._open_until.items() if until > now}

    def failure(self, tenant_id: str) -> None:
        self._failures[tenant_id] = self._failures.get(tenant_id, 0) + 1
        if self._failures[tenant_id] >= self.threshold:
            self._open_until[tenant_id] = self.clock() + self.cool_down

    def success(self, tenant_id: str) -> None:
        self._failures.pop(tenant_id, None)
        self._open_until.pop(tenant_id, None)


def backoff(attempts: int, *, retry_after: float | None = None) -> float:
    if retry_after is not None:
        return max(retry_after, 1.0)
    base: float = min(MAX_BACKOFF, 2.0 ** min(attempts, 12))
    return base / 2 + random.uniform(0, base / 2)  # noqa: S311 (jitter)


class Worker:
    def __init__(
        self,
        ctx: AppContext,
        *,
        worker_id: str | None = None,
        batch_size: int = 20,
        concurrency: int = 8,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 1.0,
        full_reconcile_every: timedelta | None = timedelta(hours=6),
        client_factory: Callable[[str], ConnectWiseClient] | None = None,
        crash: CrashHook = _no_crash,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.ctx = ctx
        self.worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.full_reconcile_every = full_reconcile_every
        self.client_factory = client_factory
        self.crash = crash
        self.breaker = breaker or CircuitBreaker()
        self.handled: list[Claim] = []
        self.healthy = True
        self.running = False  # inside run_forever's loop (readiness: a worker that stopped is not ready)
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_full: datetime | None = None

    def now(self) -> datetime:
        return self.ctx.now()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Work at once (the intake stored deliveries)."""
        self._wake.set()

    # ------------------------------------------------------------------ applying deliveries
    async def apply(self, *, max_batches: int = 20) -> int:
        """Apply stored deliveries (a few batches, so sync jobs are never starved)."""
        total = 0
        for _ in range(max_batches):
            async with self.ctx.sessionmaker() as session, session.begin():
                applied = await apply_pending(session, now=self.now())
            total += applied
            if applied == 0:
                break
        if total:
            self.ctx.metrics.deliveries_applied.inc(total)
        return total

    # ------------------------------------------------------------------ claiming
    async def claim(self) -> list[Claim]:
        now = self.now()
        is_pg = self.ctx.engine.dialect.name == "postgresql"
        async with self.ctx.sessionmaker() as session, session.begin():
            statement = (
                select(SyncState.company_id)
                .where(SyncState.due_at <= now, (SyncState.claimed_until.is_(None)) | (SyncState.claimed_until < now))
                .order_by(SyncState.due_at)
                .limit(self.batch_size)
            )
            blocked = self.breaker.open_tenants()
            if blocked:
                statement = statement.where(SyncState.tenant_id.not_in(blocked))
            if is_pg:
                statement = statement.with_for_update(skip_locked=True)
            ids = list(await session.scalars(statement))
            if not ids:
                return []
            await session.execute(
                update(SyncState)
                .where(SyncState.company_id.in_(ids))
                .values(claimed_by=self.worker_id, claimed_until=now + self.lease)
            )
            rows = await session.scalars(
                select(SyncState).where(SyncState.company_id.in_(ids)).execution_options(populate_existing=True)
            )
            claims = [Claim(r.company_id, r.tenant_id, r.generation, r.reason) for r in rows]
            depth = await session.scalar(
                select(func.count()).select_from(SyncState).where(SyncState.due_at.is_not(None))
            )
            drifting = await session.scalar(
                select(func.count()).select_from(SyncState).where(SyncState.status == SyncStatus.drift.value)
            )
        self.ctx.metrics.sync_queue_depth.set(depth or 0)
        self.ctx.metrics.drift.set(drifting or 0)
        return claims

    def holder(self, claim: Claim) -> Callable[[AsyncSession], Awaitable[None]]:
        """The fence: renews this worker's lease on the company inside the caller's transaction, or raises
        `LeaseLostError` when another worker holds it now."""

        async def hold(session: AsyncSession) -> None:
            now = self.now()
            result = await session.execute(
                update(SyncState)
                .where(
                    SyncState.company_id == claim.company_id,
                    SyncState.claimed_by == self.worker_id,
                    SyncState.claimed_until > now,
                )
                .values(claimed_until=now + self.lease)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseLostError(claim.company_id)

        return hold

    async def _clients(self, tenant_ids: set[str]) -> dict[str, ConnectWiseClient]:
        """One CW client per tenant for the batch (its codebase and setup tables are cached in the context)."""
        if self.client_factory is not None:
            return {t: self.client_factory(t) for t in tenant_ids}
        clients: dict[str, ConnectWiseClient] = {}
        async with self.ctx.sessionmaker() as session:
            for connection in await session.scalars(select(CwConnection).where(CwConnection.tenant_id.in_(tenant_ids))):
                clients[connection.tenant_id] = client_for(self.ctx, connection, attempts=3, retry_timeout=20)
        return clients

    async def _prefetch_agreements(
        self, claims: list[Claim], clients: dict[str, ConnectWiseClient], prepared: dict[str, Prepared]
    ) -> dict[str, Agreement]:
        """Periodic reconciles re-read each agreement: one `id in (…)` call per tenant and batch, not one each."""
        by_tenant: dict[str, dict[int, str]] = {}
        for claim in claims:
            ready = prepared.get(claim.company_id)
            agreement_id = ready.company.cw_agreement_id if ready is not None else None
            if claim.reason == "periodic" and claim.tenant_id in clients and agreement_id is not None:
                by_tenant.setdefault(claim.tenant_id, {})[agreement_id] = claim.company_id
        found: dict[str, Agreement] = {}
        for tenant_id, wanted in by_tenant.items():
            try:
                agreements = await clients[tenant_id].get_agreements(sorted(wanted))
            except CWError:
                continue  # each company then reads its own agreement and reports the failure
            for agreement in agreements:
                if agreement.id in wanted:
                    found[wanted[agreement.id]] = agreement
        return found

    async def run_once(self) -> int:
        """Apply stored deliveries, then claim one batch of companies and work it. Returns how much was handled."""
        applied = await self.apply()
        claims = await self.claim()
        if not claims:
            return applied
        semaphore = asyncio.Semaphore(self.concurrency)
        try:
            # The batch's inputs in one query per table, its clients, and its agreements in one CW call per tenant.
            prepared = await prepare(self.ctx, [c.company_id for c in claims], now=self.now())
            clients = await self._clients({c.tenant_id for c in claims})
            agreements = await self._prefetch_agreements(claims, clients, prepared)
        except Exception as exc:  # the database or CW blinked: every claim still gets handled (and retried)
            log.warning("sync.batch_prepare_failed", error_type=type(exc).__name__)
            prepared, clients, agreements = {}, {}, {}

        async def one(claim: Claim) -> None:
            async with semaphore:
                await self.handle(
                    claim,
                    client=clients.get(claim.tenant_id),
                    agreement=agreements.get(claim.company_id),
                    prepared=prepared.get(claim.company_id),
                )

        await asyncio.gather(*(one(c) for c in claims))
        return applied + len(claims)

    async def drain(self, *, max_rounds: int = 10_000) -> int:
        """Work until nothing is due now (tests, the demo, benchmarks)."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once()
            if handled == 0:
                return total
            total += handled
        return total

    async def handle(
        self,
        claim: Claim,
        *,
        client: ConnectWiseClient | None = None,
        agreement: Agreement | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        started = time.perf_counter()
        if client is None and self.client_factory is not None:
            client = self.client_factory(claim.tenant_id)
        outcome: Outcome | None = None
        error: BaseException | None = None
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(claim, done))
        try:
            outcome = await reconcile_company(
                self.ctx,
                claim.company_id,
                client=client,
                crash=self.crash,
                hold=self.holder(claim),
                agreement=agreement,
                overwrite_drift=claim.reason == "drift_overwrite",
                now=self.now(),
                prepared=prepared,
            )
        except LeaseLostError:
            log.warning("sync.lease_lost", company_id=claim.company_id, worker_id=self.worker_id)
            return  # the worker that holds the company now records its outcome
        except (CWError, MappingStaleError, AppError) as exc:
            error = exc
        except asyncio.CancelledError:
            await self._release(claim)
            raise
        except Exception as exc:  # a crash (real or injected): leave the company due, try again later
            error = exc
            log.warning("sync.job_crashed", company_id=claim.company_id, error_type=type(exc).__name__)
        finally:
            done.set()
            await keeper
            self.ctx.metrics.sync_job_latency.observe(time.perf_counter() - started)
        self.handled.append(claim)
        await self._finish(claim, outcome, error)

    async def _keep_lease(self, claim: Claim, done: asyncio.Event) -> None:
        """Renew the lease every third of it until the job is done: a live worker keeps its company through a CW
        call that outlasts a lease (a fenced write that then reaches CW late would meet another worker's create of
        the same line); a killed one loses it within a lease. A lost lease is left to the job's next fence check."""
        hold = self.holder(claim)
        while True:
            try:
                await asyncio.wait_for(done.wait(), timeout=self.lease.total_seconds() / 3)
                return
            except TimeoutError:
                pass
            try:
                async with self.ctx.sessionmaker() as session, session.begin():
                    await hold(session)
            except LeaseLostError:
                return
            except Exception as exc:  # the database blinked: try again at the next beat
                log.warning("sync.lease_renewal_failed", company_id=claim.company_id, error_type=type(exc).__name__)

    async def _release(self, claim: Claim) -> None:
        async with self.ctx.sessionmaker() as session, session.begin():
            await session.execute(
                update(SyncState)
                .where(SyncState.company_id == claim.company_id, SyncState.claimed_by == self.worker_id)
                .values(claimed_by=None, claimed_until=None)
            )

    async def _finish(self, claim: Claim, outcome: Outcome | None, error: BaseException | None) -> None:
        now = self.now()
        async with self.ctx.sessionmaker() as session, session.begin():
            state = await session.get(
                SyncState,
                claim.company_id,
                with_for_update=self.ctx.engine.dialect.name == "postgresql",
                populate_existing=True,
            )
            if state is None or state.claimed_by != self.worker_id:
                return  # fenced: another worker took the company over
            state.claimed_by, state.claimed_until, state.last_attempt_at = None, None, now
            moved = state.generation != claim.generation
            if outcome is not None:
                self.breaker.success(claim.tenant_id)
                state.attempts, state.last_error = 0, outcome.detail
                state.status = outcome.status
                if outcome.status is not SyncStatus.paused:
                    state.drift, state.pending_plan = outcome.drift, outcome.pending_plan
                    if outcome.snapshot is not None:
                        state.cw_snapshot = outcome.snapshot
                if outcome.status in (SyncStatus.in_sync, SyncStatus.drift):
                    state.last_success_at = now
                    state.discrepancies = outcome.discrepancies
                state.due_at = now if moved else outcome.wakeup
                label = outcome.status.value
            elif isinstance(error, MappingStaleError):
                state.attempts, state.status = 0, SyncStatus.needs_attention
                state.last_error = str(error)
                state.due_at = now if moved else None  # waits for a remap (or a re-sync)
                label = SyncStatus.needs_attention.value
            elif isinstance(error, CWRetryableError) or (
                not isinstance(error, CWPermanentError | AppError) and state.attempts + 1 < MAX_ATTEMPTS
            ):
                if isinstance(error, CWRetryableError):
                    self.breaker.failure(claim.tenant_id)
                state.attempts += 1
                state.status = SyncStatus.retrying
                retry_after = error.retry_after if isinstance(error, CWThrottledError) else None
                state.due_at = now + timedelta(seconds=backoff(state.attempts, retry_after=retry_after))
                state.last_error = _describe(error)
                label = SyncStatus.retrying.value
            else:
                state.attempts += 1
                state.status = SyncStatus.failed
                state.last_error = _describe(error)
                state.due_at = now if moved else None  # parked until something changes or a resync is asked
                label = SyncStatus.failed.value
            if outcome is not None and outcome.agreement_seen is not None:  # after the state's changes: one flush
                status, next_invoice, checked_at = outcome.agreement_seen
                await session.execute(
                    update(Company)
                    .where(Company.id == claim.company_id)
                    .values(agreement_status=status, next_invoice_date=next_invoice, agreement_checked_at=checked_at)
                )
        self.ctx.metrics.sync_jobs.labels(label).inc()
        log.info(
            "sync.job",
            company_id=claim.company_id,
            tenant_id=claim.tenant_id,
            outcome=label,
            operations=outcome.operations if outcome else 0,
        )

    async def schedule_full_reconcile(self) -> int:
        self.ctx.billing_cycles.clear()  # a full reconcile re-reads the setup tables once
        now = self.now()
        async with self.ctx.sessionmaker() as session, session.begin():
            tenants = list(await session.scalars(select(Tenant.id).where(Tenant.billing_enabled.is_(True))))
            count = 0
            for tenant_id in tenants:
                count += await schedule_tenant(session, tenant_id=tenant_id, reason="periodic", at=now)
            await purge_inbox(session, now=now)
        return count

    async def turn(self) -> int:
        """One turn of `run_forever`: the periodic full reconcile when due, then the work."""
        now = self.now()
        if self.full_reconcile_every is not None and (
            self._last_full is None or now - self._last_full >= self.full_reconcile_every
        ):
            await self.schedule_full_reconcile()
            self._last_full = now
        return await self.run_once()

    async def run_forever(self) -> None:
        """Work until stopped. An error of any kind is logged and waited out (growing pauses up to a minute); it
        never ends the loop. `healthy` is False while turns keep failing."""
        log.info("sync.worker_started", worker_id=self.worker_id)
        failures = 0
        self.running = True
        try:
            while not self._stop.is_set():
                try:
                    handled = await self.turn()
                except Exception as exc:
                    failures += 1
                    self.healthy, self.last_error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
                    self.ctx.metrics.worker_healthy.set(0)
                    log.warning("sync.worker_error", error_type=type(exc).__name__, failures=failures)
                    await self._pause(min(60.0, 0.5 * 2 ** min(failures, 7)))
                    continue
                failures = 0
                self.healthy, self.last_error = True, None
                self.ctx.metrics.worker_healthy.set(1)
                if handled == 0:
                    await self._pause(self.poll_interval)
        finally:
            self.running = False
            self.ctx.metrics.worker_healthy.set(0)
        log.info("sync.worker_stopped", worker_id=self.worker_id)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()


def _describe(error: BaseException | None) -> str:
    if isinstance(error, CWError):
        return f"ConnectWise {error.status or ''}: {error.describe()}".replace("  ", " ")
    if isinstance(error, AppError):
        return error.detail
    return f"{type(error).__name__}: {error}" if error else "unknown error"
