"""One reconcile of one company: read what CW holds, plan, apply — with every step safe to crash in.

Transactions are short and never span a CW call. Before a create, the tracked row is committed with
`create_pending`; before any write, the values about to be written are committed among the row's `uncertain`
writes. A crash or a lost response therefore leaves enough behind for the next run to recognise its own write (by
marker, by values) instead of creating a duplicate or calling its own write a hand edit. Every transaction before a
CW write and after it first renews the worker's lease on the company (`hold`): a worker that lost it writes nothing
more and commits nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.client import ConnectWiseClient
from app.connectwise.errors import CWNotFoundError, CWValidationError
from app.connectwise.schemas import Addition, AdditionWrite, Agreement
from app.context import AppContext
from app.db.models import AgreementTerm, Company, SyncState, SyncStatus, Tenant, TrackedAddition
from app.db.repositories.additions import is_live, retire, revive
from app.domain.markers import is_ours
from app.domain.periods import local_day
from app.domain.plan import Line, LineValues, Operation, OpKind, Plan, frontier, plan
from app.services.audit import record_audit
from app.services.billing_target import Target, TrackedRow, load_target, load_targets, values_from_json, values_to_json
from app.services.cw_connections import client_for, get_connection
from app.services.mapping import MappingRejectedError, check_agreement, line_values

# A hook for fault-injection tests: called with a step name; raising simulates a crash at that step.
CrashHook = Callable[[str], Awaitable[None]]
Hold = Callable[[AsyncSession], Awaitable[None]]
AGREEMENT_TTL = timedelta(hours=1)  # how long what CW showed of an agreement is trusted before it is read again
UNCERTAIN_KEPT = 5


async def _no_crash(_step: str) -> None:
    return None


async def _no_lease(_session: AsyncSession) -> None:
    return None


class MappingStaleError(Exception):
    """The mapped agreement can no longer take license billing (cancelled, expired, gone)."""


@dataclass
class Outcome:
    status: SyncStatus
    operations: int = 0
    drift: list[dict[str, Any]] | None = None
    detail: str | None = None
    snapshot: dict[str, Any] | None = None  # what CW holds now, by addition id
    pending_plan: dict[str, Any] | None = None  # review mode: the change set waiting for approval
    wakeup: datetime | None = None  # come back then even if nothing happens (a future-dated change takes effect)
    # What this run read of the agreement (status, next invoice date, when), for the company row.
    agreement_seen: tuple[str, date | None, datetime] | None = None
    discrepancies: int = 0  # periods whose lines could not be made to add up (a held hand edit)


def addition_snapshot(addition: Addition) -> dict[str, Any]:
    return values_to_json(line_values(addition)) | {"serial_number": addition.serial_number}


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a reconcile reads from the database before talking to CW (a worker reads it for its whole batch)."""

    company: Company
    tenant: Tenant
    target: Target
    generation: int
    reason: str | None
    approved: bool  # review mode: the pending change set of this generation was approved


async def prepare(ctx: AppContext, company_pks: Sequence[str], *, now: datetime) -> dict[str, Prepared]:
    """Read the companies, their tenants, sync states and targets: one query per table, whatever their number."""
    async with ctx.read_sessionmaker() as session:
        companies = list(await session.scalars(select(Company).where(Company.id.in_(company_pks))))
        tenant_ids = {c.tenant_id for c in companies}
        tenants = {t.id: t for t in await session.scalars(select(Tenant).where(Tenant.id.in_(tenant_ids)))}
        states = {
            s.company_id: s
            for s in await session.scalars(select(SyncState).where(SyncState.company_id.in_(company_pks)))
        }
        targets = await load_targets(session, companies=companies, tenants=tenants, now=now)
    prepared = {}
    for company in companies:
        state = states.get(company.id)
        prepared[company.id] = Prepared(
            company=company,
            tenant=tenants[company.tenant_id],
            target=targets[company.id],
            generation=state.generation if state else 0,
            reason=state.reason if state else None,
            approved=state is not None and state.approved_generation == state.generation,
        )
    return prepared


async def reconcile_company(
    ctx: AppContext,
    company_pk: str,
    *,
    client: ConnectWiseClient | None = None,
    agreement: Agreement | None = None,
    crash: CrashHook = _no_crash,
    hold: Hold = _no_lease,
    now: datetime | None = None,
    overwrite_drift: bool = False,
    prepared: Prepared | None = None,
) -> Outcome:
    """Plan and apply one company. The caller (the worker) records the returned outcome in the sync state."""
    now = now or ctx.now()
    if prepared is None:
        prepared = (await prepare(ctx, [company_pk], now=now)).get(company_pk)
    if prepared is None:
        return Outcome(SyncStatus.paused, detail="the company no longer exists")
    company, tenant, target = prepared.company, prepared.tenant, prepared.target
    await _refresh_count(ctx, company, target)
    if not tenant.billing_enabled:
        return Outcome(SyncStatus.paused, detail="billing is off for the tenant (the master switch)")
    if company.mapped_at is None or not target.billing.schedule:
        return Outcome(SyncStatus.paused, detail="the company is not mapped to an agreement")
    if target.product_id is None:
        return Outcome(SyncStatus.paused, detail="no product is mapped")
    if client is None:
        async with ctx.read_sessionmaker() as session:
            client = client_for(ctx, await get_connection(session, tenant.id), attempts=3, retry_timeout=20)
    approved, generation, reason = prepared.approved, prepared.generation, prepared.reason

    target = await _check_agreement(ctx, client, target, now=now, agreement=agreement)
    seen = (
        ("Active", target.next_invoice_date, now) if target.agreement_checked_at == now else None
    )  # read just now (else still fresh)
    frontier_period = frontier(target.situation())
    await crash("before_read")
    wanted = _agreements_to_read(target, frontier_period.start if frontier_period else None)
    target = await _check_others(ctx, client, target, wanted, now=now)
    situation = target.situation(overwrite_drift=overwrite_drift)
    additions = await _read(client, target, wanted)
    lines = await _match(ctx, target, additions)
    result = plan(situation, lines)
    snapshot = {str(a.id): addition_snapshot(a) for found in additions.values() for a in found}
    drift = [
        {
            "marker": str(d.marker),
            "line": d.marker.kind.value,
            "cw_addition_id": d.addition_id,
            "agreement_id": d.agreement_id,
            "detail": d.describe(),
        }
        for d in result.drifts
    ]
    wakeup = _wakeup(result, target)
    if target.sync_mode == "review" and not result.empty and not approved:
        pending = {
            "generation": generation,
            "reason": reason,
            "operations": [op.describe() for op in result.operations],
        }
        return Outcome(
            SyncStatus.awaiting_approval,
            drift=drift or None,
            snapshot=snapshot,
            pending_plan=pending,
            agreement_seen=seen,
        )
    applied = 0
    for operation in result.operations:
        written = await _apply(ctx, client, target, operation, crash=crash, hold=hold)
        if written is None:
            snapshot.pop(str(operation.addition_id), None)
        else:
            snapshot[str(written.id)] = addition_snapshot(written)
        applied += 1
    status = SyncStatus.drift if result.held else SyncStatus.in_sync
    return Outcome(
        status,
        operations=applied,
        drift=drift or None,
        snapshot=snapshot,
        wakeup=wakeup,
        discrepancies=len({(m.kind, m.first) for m in result.held}),
        agreement_seen=seen,
    )


async def _refresh_count(ctx: AppContext, company: Company, target: Target) -> None:
    """The company's count today, from its history (a future-dated change counts from its day)."""
    count = target.billing.history.count_on(target.today)
    if company.license_count != count:
        async with ctx.sessionmaker() as session, session.begin():
            await session.execute(update(Company).where(Company.id == company.id).values(license_count=count))


def _wakeup(result: Plan, target: Target) -> datetime | None:
    if result.next_wakeup is None:
        return None
    from zoneinfo import ZoneInfo

    return datetime.combine(result.next_wakeup, datetime.min.time(), tzinfo=ZoneInfo(target.timezone))


async def _check_agreement(
    ctx: AppContext, client: ConnectWiseClient, target: Target, *, now: datetime, agreement: Agreement | None
) -> Target:
    """Read the current agreement when it was prefetched or is not fresh. A cancelled, expired or deleted agreement
    is never written to: the day it ended is recorded (no period after it is billed there) and the company needs
    attention until it is remapped."""
    if target.agreement_id is None:
        return target
    fresh = target.agreement_checked_at is not None and now - target.agreement_checked_at < AGREEMENT_TTL
    if agreement is None and fresh:
        if target.agreement_status in ("Cancelled", "Expired", "Gone"):
            raise MappingStaleError(
                f"agreement {target.agreement_id} is {target.agreement_status.lower()} in ConnectWise; remap the "
                "company to an agreement that bills"
            )
        return target
    today = local_day(now, target.timezone)
    try:
        read = agreement or await client.get_agreement(target.agreement_id)
    except CWNotFoundError:
        await _store_agreement(ctx, target, status="Gone", next_invoice=None, now=now, ended_on=today)
        raise MappingStaleError(
            f"agreement {target.agreement_id} no longer exists in ConnectWise; remap the company"
        ) from None
    ended = ended_on(read, today)
    if ended is not None:
        status = "Cancelled" if read.cancelled_flag else "Expired"
        await _store_agreement(ctx, target, status=status, next_invoice=None, now=now, ended_on=ended)
        raise MappingStaleError(
            f"agreement {target.agreement_id} ('{read.name}') was {status.lower()} in ConnectWise on {ended}; remap "
            "the company to an agreement that bills (what it owes meanwhile is caught up there)"
        )
    try:
        await check_agreement(client, cw_company_id=target.cw_company_id or 0, agreement=read, now=now)
    except MappingRejectedError as exc:
        raise MappingStaleError(f"{exc.detail}; remap the company") from None
    next_invoice = read.next_invoice_date.date() if read.next_invoice_date else None
    # Recorded with the outcome, in the worker's closing transaction (`Outcome.agreement_seen`).
    return replace(target, agreement_status="Active", next_invoice_date=next_invoice, agreement_checked_at=now)


def ended_on(agreement: Agreement, today: date) -> date | None:
    """The day the agreement stopped billing in CW: the day it was cancelled, or its end date once past."""
    if agreement.cancelled_flag or (agreement.agreement_status or "").lower() == "cancelled":
        return agreement.date_cancelled.date() if agreement.date_cancelled else today
    end = agreement.end_date.date() if agreement.end_date else None
    if end is not None and end < today and not agreement.no_ending_date_flag:
        return end
    return None


async def _store_agreement(
    ctx: AppContext,
    target: Target,
    *,
    status: str,
    next_invoice: date | None,
    now: datetime,
    ended_on: date | None = None,
) -> None:
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(
            update(Company)
            .where(Company.id == target.company_pk)
            .values(agreement_status=status, next_invoice_date=next_invoice, agreement_checked_at=now)
        )
        if ended_on is not None:
            await session.execute(
                update(AgreementTerm)
                .where(
                    AgreementTerm.tenant_id == target.tenant_id,
                    AgreementTerm.cw_agreement_id == target.agreement_id,
                    AgreementTerm.ended_on.is_(None),
                )
                .values(ended_on=ended_on)
            )


def _agreements_to_read(target: Target, f_start: date | None) -> set[int]:
    """Every agreement that may be written: the current one, and any other that still holds an open line of the
    company (after a move), unless it already ended in CW."""
    agreements = {target.agreement_id} if target.agreement_id is not None else set()
    schedule = target.billing.schedule
    for row in target.tracked:
        if row.agreement_id in agreements or schedule.ended(row.agreement_id) is not None:
            continue
        values = row.written
        open_line = values is None or (
            f_start is not None
            and (values.effective >= f_start or values.cancelled is None or values.cancelled >= f_start)
        )
        if open_line:
            agreements.add(row.agreement_id)
    return agreements


async def _check_others(
    ctx: AppContext, client: ConnectWiseClient, target: Target, agreements: set[int], *, now: datetime
) -> Target:
    """Agreements the company left that still hold its open lines: read them (one call), and record the end of any
    that ended in CW (nothing is written there any more)."""
    others = sorted(a for a in agreements if a != target.agreement_id)
    if not others:
        return target
    today = local_day(now, target.timezone)
    found = {a.id: a for a in await client.get_agreements(others)}
    ended: dict[int, date] = {}
    for agreement_id in others:
        read = found.get(agreement_id)
        day = ended_on(read, today) if read is not None else today
        if day is not None:
            ended[agreement_id] = day
    if not ended:
        return target
    async with ctx.sessionmaker() as session, session.begin():
        for agreement_id, day in ended.items():
            await session.execute(
                update(AgreementTerm)
                .where(
                    AgreementTerm.tenant_id == target.tenant_id,
                    AgreementTerm.cw_agreement_id == agreement_id,
                    AgreementTerm.ended_on.is_(None),
                )
                .values(ended_on=day)
            )
        company = await session.get(Company, target.company_pk)
        assert company is not None  # noqa: S101 (read in this run)
        tenant = await session.get(Tenant, target.tenant_id)
        assert tenant is not None  # noqa: S101 (foreign key)
        return replace(target, billing=(await load_target(session, tenant=tenant, company=company, now=now)).billing)


async def _read(client: ConnectWiseClient, target: Target, agreements: set[int]) -> dict[int, list[Addition]]:
    """The product's additions on the agreements that may be written (ended ones are skipped)."""
    assert target.product_id is not None  # noqa: S101 (checked by the caller)
    schedule = target.billing.schedule
    return {
        a: await client.find_lines(a, product_id=target.product_id)
        for a in sorted(agreements)
        if schedule.ended(a) is None
    }


async def _match(ctx: AppContext, target: Target, additions: dict[int, list[Addition]]) -> list[Line]:
    """Tracked rows matched with what CW holds. Settles what the last runs could not learn: a create whose answer
    was lost is found by its marker; a write whose answer was lost is the service's own when CW holds its values."""
    by_id = {a.id: (agreement, a) for agreement, found in additions.items() for a in found}
    by_serial = {
        (agreement, a.serial_number): a for agreement, found in additions.items() for a in found if a.serial_number
    }
    lines: list[Line] = []
    settled: dict[int, tuple[int | None, LineValues | None]] = {}
    deleted: list[int] = []
    for row in target.tracked:
        read = row.agreement_id in additions
        found = None
        if row.addition_id is not None:
            hit = by_id.get(row.addition_id)
            found = hit[1] if hit and hit[0] == row.agreement_id else None
        if row.delete_pending and read and found is None:
            deleted.append(row.id)  # a delete whose answer was lost: it happened
            continue
        elif row.create_pending and read:
            found = by_serial.get((row.agreement_id, str(row.marker)))
        current = line_values(found) if found is not None else (None if read else row.written)
        written = row.written
        if found is not None and (row.addition_id is None or (current != written and current in row.uncertain)):
            written = current  # our own write, whose answer never came
            settled[row.id] = (found.id, current)
        lines.append(
            Line(
                marker=row.marker,
                agreement_id=row.agreement_id,
                addition_id=found.id if found is not None else row.addition_id,
                current=current,
                written=written,
                uncertain=row.uncertain,
                adopted=row.adopted,
            )
        )
    if settled or deleted:
        async with ctx.sessionmaker() as session, session.begin():
            for row_id, (addition_id, values) in settled.items():
                tracked = await session.get(TrackedAddition, row_id)
                if tracked is not None and values is not None:
                    tracked.cw_addition_id, tracked.create_pending = addition_id, False
                    tracked.last_written = values_to_json(values)
            for row_id in deleted:
                tracked = await session.get(TrackedAddition, row_id)
                if tracked is not None:
                    retire(tracked, ctx.now())
    return lines


async def _apply(
    ctx: AppContext, client: ConnectWiseClient, target: Target, op: Operation, *, crash: CrashHook, hold: Hold
) -> Addition | None:
    """Send one operation, recording first what an unanswered request may have done; the written addition (None
    for a delete)."""
    if op.kind is OpKind.delete:
        await _delete(ctx, client, target, op, crash=crash, hold=hold)
        return None
    intended = values_to_json(op.values)
    async with ctx.sessionmaker() as session, session.begin():
        await hold(session)
        row = await _tracked_row(session, target, op)
        if op.kind is OpKind.create:
            row.create_pending, row.cw_addition_id = True, None
        row.delete_pending = False
        row.uncertain = [*(row.uncertain or [])[-(UNCERTAIN_KEPT - 1) :], intended]
    await crash("before_cw_write")
    try:
        if op.kind is OpKind.create:
            assert target.product_id is not None  # noqa: S101 (checked before planning)
            addition = await client.add_line(
                op.agreement_id,
                product_id=target.product_id,
                serial_number=str(op.marker),
                values=_write_of(op.values, tuple(op.changes)),
            )
        else:
            assert op.addition_id is not None  # noqa: S101 (a patch names an existing addition)
            addition = await client.update_line(
                op.agreement_id, op.addition_id, _write_of(op.values, tuple(op.changes))
            )
    except CWValidationError as exc:
        if any(e.field == "agreementId" for e in exc.errors):  # CW refuses: the agreement ended meanwhile
            async with ctx.sessionmaker() as session, session.begin():
                company = await session.get(Company, target.company_pk)
                if company is not None:
                    company.agreement_checked_at = None  # read it again on the next run (and record its end)
            raise MappingStaleError(f"ConnectWise refused the write: {exc.describe()}; remap the company") from None
        raise
    await crash("after_cw_write")
    async with ctx.sessionmaker() as session, session.begin():
        await hold(session)
        row = await _tracked_row(session, target, op)
        before = dict(row.last_written) if row.last_written else None
        row.last_written = intended
        row.last_written_at = ctx.now()
        row.cw_addition_id, row.create_pending = addition.id, False
        row.uncertain = [u for u in row.uncertain or [] if u != intended] or None
        await record_audit(
            session,
            tenant_id=target.tenant_id,
            actor="sync",
            action="cw.addition.created" if op.kind is OpKind.create else "cw.addition.patched",
            object_type="company",
            object_id=target.company_id,
            before=before,
            after={
                "cw_addition_id": addition.id,
                "agreement_id": op.agreement_id,
                "line": op.marker.kind.value,
                "reason": op.reason,
                **intended,
            },
        )
    await crash("after_commit")
    return addition


async def _delete(
    ctx: AppContext, client: ConnectWiseClient, target: Target, op: Operation, *, crash: CrashHook, hold: Hold
) -> None:
    assert op.addition_id is not None  # noqa: S101 (the planner deletes only lines CW holds)
    async with ctx.sessionmaker() as session, session.begin():
        await hold(session)
        row = await _tracked_row(session, target, op)
        row.delete_pending = True
    await crash("before_cw_write")
    await client.remove_line(op.agreement_id, op.addition_id)
    await crash("after_cw_write")
    async with ctx.sessionmaker() as session, session.begin():
        await hold(session)
        row = await _tracked_row(session, target, op)
        before = dict(row.last_written) if row.last_written else None
        retire(row, ctx.now())
        await record_audit(
            session,
            tenant_id=target.tenant_id,
            actor="sync",
            action="cw.addition.deleted",
            object_type="company",
            object_id=target.company_id,
            before=before,
            after={"cw_addition_id": op.addition_id, "agreement_id": op.agreement_id, "reason": op.reason},
        )
    await crash("after_commit")


def _write_of(values: LineValues, changed: Sequence[str]) -> AdditionWrite:
    return AdditionWrite(
        quantity=values.quantity,
        unit_price=values.unit_price,
        unit_cost=values.unit_cost,
        less_included=values.less_included,
        effective=values.effective,
        cancelled=values.cancelled,
        description=values.description,
        fields=tuple(changed),
    )


async def _tracked_row(session: AsyncSession, target: Target, op: Operation) -> TrackedAddition:
    row = await session.scalar(
        select(TrackedAddition).where(
            TrackedAddition.tenant_id == target.tenant_id,
            TrackedAddition.cw_agreement_id == op.agreement_id,
            TrackedAddition.marker == str(op.marker),
        )
    )
    if row is None:
        row = TrackedAddition(
            tenant_id=target.tenant_id,
            company_id=target.company_pk,
            cw_agreement_id=op.agreement_id,
            kind=op.marker.kind.value,
            marker=str(op.marker),
        )
        session.add(row)
    elif not is_live(row) and op.kind is not OpKind.delete:  # deleted once, written again
        revive(row)
    return row


def untracked(snapshot: dict[str, Any], tracked_ids: set[int]) -> list[int]:
    """Additions of the product that this service does not manage (by CW id)."""
    return sorted(
        int(i) for i, a in snapshot.items() if int(i) not in tracked_ids and not is_ours(a.get("serial_number"))
    )


__all__ = ["CrashHook", "MappingStaleError", "Outcome", "TrackedRow", "reconcile_company", "values_from_json"]
