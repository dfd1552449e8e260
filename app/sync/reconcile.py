"""One reconcile of one company: read what CW holds, plan, apply — with every step safe to crash in.

Transactions are short and never span a CW call. Before a create, the tracked row is committed with
`create_pending`; before any write, the values about to be written are committed as `pending_write`. A crash or a
lost response therefore leaves enough behind for the next run to recognise its own write (by marker, by values)
instead of creating a duplicate or calling its own write a hand edit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.client import ConnectWiseClient, replace
from app.connectwise.conditions import F
from app.connectwise.errors import CWNotFoundError
from app.connectwise.schemas import Addition, Agreement
from app.context import AppContext
from app.db.base import utcnow
from app.db.models import BillingProduct, Company, SyncState, Tenant, TrackedAddition
from app.domain.periods import BillingCycle
from app.domain.plan import (
    MANAGED_FIELDS,
    ActualAddition,
    Operation,
    OpKind,
    Role,
    desired_additions,
    plan,
    replace_inputs,
)
from app.domain.proration import ProrationMode
from app.services.audit import record_audit
from app.services.billing_inputs import (
    current_fields,
    fields_from_json,
    fields_payload,
    fields_to_json,
    load_inputs,
    same_fields,
)
from app.services.cw_connections import client_for, get_connection
from app.services.mapping import AgreementFacts, MappingRejectedError, check_agreement
from app.services.sync_schedule import sync_eligible

# A hook for fault-injection tests: called with a step name; raising simulates a crash at that step.
CrashHook = Callable[[str], Awaitable[None]]


async def _no_crash(_step: str) -> None:
    return None


class MappingStaleError(Exception):
    """The mapped agreement can no longer take license billing (cancelled, expired, gone)."""


@dataclass
class Outcome:
    status: str  # in_sync | drift | awaiting_approval | paused
    operations: int = 0
    drift: list[dict[str, Any]] | None = None
    detail: str | None = None
    snapshot: dict[str, Any] | None = None  # what CW holds now, by addition id
    pending_plan: dict[str, Any] | None = None  # review mode: the change set waiting for approval


async def _tracked(session: AsyncSession, company: Company) -> list[TrackedAddition]:
    return list(
        await session.scalars(
            select(TrackedAddition).where(
                TrackedAddition.company_id == company.id,
                TrackedAddition.retired_at.is_(None),
                TrackedAddition.cw_agreement_id == company.cw_agreement_id,
            )
        )
    )


def _actual(
    rows: list[TrackedAddition], in_cw: dict[int, Addition], by_serial: dict[str, Addition]
) -> tuple[list[ActualAddition], bool]:
    """What we track, matched with what CW holds. Also settles writes whose answers were lost: returns whether a
    tracked row changed (and must be saved)."""
    actual, dirty = [], False
    for row in rows:
        found = in_cw.get(row.cw_addition_id) if row.cw_addition_id is not None else None
        if found is None and row.cw_addition_id is None and row.create_pending:
            found = by_serial.get(row.marker)  # a create whose answer we never got
            if found is not None:
                row.cw_addition_id, dirty = found.id, True
        current = current_fields(found) if found is not None else None
        last = fields_from_json(row.last_written)
        pending = fields_from_json(row.pending_write)
        if current is not None and pending is not None and same_fields(pending, current, tuple(pending)):
            last = {**(last or {}), **pending}  # our own write landed; its answer was lost
            row.last_written, dirty = fields_to_json(last), True
        if current is not None and (row.create_pending or row.pending_write is not None):
            row.create_pending, row.pending_write, dirty = False, None, True
        actual.append(
            ActualAddition(
                marker=row.marker,
                role=Role(row.role),
                cw_addition_id=row.cw_addition_id,
                current=current if (current is not None or row.cw_addition_id is not None) else None,
                last_written=last,
            )
        )
    return actual, dirty


async def refreshed_facts(
    client: ConnectWiseClient,
    *,
    agreement_id: int,
    cw_company_id: int,
    now: datetime,
    agreement: Agreement | None = None,
) -> AgreementFacts:
    """The agreement as CW has it now (prefetched by the worker for a whole batch when possible)."""
    try:
        agreement = agreement or await client.get_agreement(agreement_id)
        return await check_agreement(client, cw_company_id=cw_company_id, agreement=agreement, now=now)
    except CWNotFoundError:
        raise MappingStaleError(
            f"agreement {agreement_id} no longer exists in ConnectWise; remap the company"
        ) from None
    except MappingRejectedError as exc:
        raise MappingStaleError(f"{exc.detail}; remap the company") from None


async def reconcile_company(
    ctx: AppContext,
    company_pk: str,
    *,
    client: ConnectWiseClient | None = None,
    refresh_agreement: bool = False,
    agreement: Agreement | None = None,
    crash: CrashHook = _no_crash,
    now: datetime | None = None,
    overwrite_drift: bool = False,
) -> Outcome:
    """Plan and apply one company. The caller (the worker) records the returned outcome in the sync state."""
    now = now or datetime.now(UTC)
    async with ctx.sessionmaker() as session, session.begin():
        company = await session.get(Company, company_pk)
        if company is None:
            return Outcome(status="paused", detail="company no longer exists")
        tenant = await session.get(Tenant, company.tenant_id)
        assert tenant is not None  # noqa: S101 (foreign key)
        state = await session.get(SyncState, company.id)
        if not sync_eligible(tenant, company) or company.cw_agreement_id is None:
            return Outcome(status="paused", detail="billing is off, the company is not enabled, or not mapped")
        product = await session.get(BillingProduct, tenant.id)
        if product is None:
            return Outcome(status="paused", detail="no product mapped")
        if client is None:
            client = client_for(ctx, await get_connection(session, tenant.id), attempts=3, retry_timeout=20)
        inputs = await load_inputs(session, tenant=tenant, company=company, now=now)
        agreement_id = company.cw_agreement_id
        cw_company_id = company.cw_company_id or 0
        product_id = product.cw_catalog_item_id
        approved = state is not None and state.approved_generation == state.generation
        generation = state.generation if state else 0
        reason = state.reason if state else None
        review = tenant.sync_mode == "review"
        overwrite = tenant.drift_policy == "overwrite" or overwrite_drift
        tenant_id = tenant.id
        stored = (company.billing_cycle, company.bill_start_date, company.agreement_name, company.agreement_prorate)

    if refresh_agreement or agreement is not None:
        facts = await refreshed_facts(
            client, agreement_id=agreement_id, cw_company_id=cw_company_id, now=now, agreement=agreement
        )
        fresh = (facts.cycle, facts.bill_start.date(), facts.name, facts.prorate)
        if fresh != stored:  # CW changed the agreement: keep our copy in step and plan with it
            async with ctx.sessionmaker() as session, session.begin():
                row = await _company(session, company_pk)
                row.billing_cycle, row.bill_start_date, row.agreement_name, row.agreement_prorate = fresh
            inputs = replace_inputs(inputs, cycle=BillingCycle(facts.cycle), anchor=facts.bill_start.date())

    await crash("before_read")
    additions = await client.list_additions(agreement_id, conditions=F("product/id") == product_id)
    in_cw = {a.id: a for a in additions}
    by_serial = {a.serial_number: a for a in additions if a.serial_number}

    async with ctx.sessionmaker() as session:
        rows = await _tracked(session, await _company(session, company_pk))
        actual, dirty = _actual(rows, in_cw, by_serial)
        if dirty:
            await session.commit()
        else:
            await session.rollback()
    result = plan(desired_additions(inputs), actual, overwrite_drift=overwrite)
    drift = [
        {"marker": d.marker, "role": d.role.value, "cw_addition_id": d.cw_addition_id, "detail": d.describe()}
        for d in result.drifts
    ]
    snapshot = {str(a.id): fields_to_json(current_fields(a)) | {"serial_number": a.serial_number} for a in additions}

    if review and not result.empty and not approved:
        pending = {
            "generation": generation,
            "reason": reason,
            "operations": [
                {
                    "kind": op.kind.value,
                    "role": op.role.value,
                    "cw_addition_id": op.cw_addition_id,
                    "changes": fields_to_json(dict(op.changes)),
                }
                for op in result.operations
            ],
        }
        return Outcome(status="awaiting_approval", drift=drift or None, snapshot=snapshot, pending_plan=pending)

    applied = 0
    for operation in result.operations:
        written = await _apply(
            ctx,
            client,
            company_pk=company_pk,
            tenant_id=tenant_id,
            agreement_id=agreement_id,
            product_id=product_id,
            op=operation,
            crash=crash,
            mode=inputs.mode,
            period_start=inputs.period.start,
        )
        snapshot[str(written.id)] = fields_to_json(current_fields(written)) | {"serial_number": written.serial_number}
        applied += 1
    status = "drift" if result.held else "in_sync"
    return Outcome(status=status, operations=applied, drift=drift or None, snapshot=snapshot)


async def _company(session: AsyncSession, company_pk: str) -> Company:
    company = await session.get(Company, company_pk)
    if company is None:
        raise LookupError(company_pk)
    return company


async def _apply(
    ctx: AppContext,
    client: ConnectWiseClient,
    *,
    company_pk: str,
    tenant_id: str,
    agreement_id: int,
    product_id: int,
    op: Operation,
    crash: CrashHook,
    mode: ProrationMode,
    period_start: Any,
) -> Addition:
    written = fields_to_json(dict(op.changes)) if op.kind is not OpKind.create else fields_to_json(op.fields.as_dict())
    async with ctx.sessionmaker() as session, session.begin():
        row = await session.scalar(
            select(TrackedAddition).where(TrackedAddition.tenant_id == tenant_id, TrackedAddition.marker == op.marker)
        )
        if row is None:
            row = TrackedAddition(
                tenant_id=tenant_id,
                company_id=company_pk,
                cw_agreement_id=agreement_id,
                role=op.role.value,
                marker=op.marker,
                period_start=period_start if op.role is not Role.base else None,
            )
            session.add(row)
        if op.kind is OpKind.create:
            row.create_pending = True
            row.cw_addition_id = None
            row.retired_at = None
        row.pending_write = written
    await crash("before_cw_write")
    if op.kind is OpKind.create:
        body = {
            "product": {"id": product_id},
            "billCustomer": "Billable",
            "serialNumber": op.marker,
            **fields_payload(op.fields.as_dict()),
        }
        if body.get("cancelledDate") is None:
            body.pop("cancelledDate", None)
        addition = await client.create_addition(agreement_id, body)
        action = "cw.addition.created"
    else:
        assert op.cw_addition_id is not None  # noqa: S101 (patch and zero ops name an existing addition)
        operations = [replace(k, v) for k, v in fields_payload(dict(op.changes)).items()]
        addition = await client.patch_addition(agreement_id, op.cw_addition_id, operations)
        action = "cw.addition.zeroed" if op.kind is OpKind.zero else "cw.addition.patched"
    await crash("after_cw_write")
    async with ctx.sessionmaker() as session, session.begin():
        row = await session.scalar(
            select(TrackedAddition).where(TrackedAddition.tenant_id == tenant_id, TrackedAddition.marker == op.marker)
        )
        assert row is not None  # noqa: S101 (written above)
        before = dict(row.last_written) if row.last_written else None  # already JSON: as the audit stores it
        merged = {**(row.last_written or {}), **written}
        row.last_written = {k: v for k, v in merged.items() if k in MANAGED_FIELDS}
        row.last_written_at = utcnow()
        row.cw_addition_id = addition.id
        row.create_pending = False
        row.pending_write = None
        company = await session.get(Company, company_pk)
        await record_audit(
            session,
            tenant_id=tenant_id,
            actor="sync",
            action=action,
            object_type="company",
            object_id=company.external_id if company else company_pk,
            before=before,
            after={"cw_addition_id": addition.id, "role": op.role.value, "mode": mode.value, **written},
        )
    await crash("after_commit")
    return addition
