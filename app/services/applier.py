"""The applier: stored deliveries into the license history (DESIGN §4–§5). The one implementation of these rules.

It runs in the worker (in-process by default, `worker` processes when scaled out), takes pending deliveries oldest
first — `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several appliers never take the same one — and applies each batch
in one transaction, in arrival order:

* `license.count_changed`: the change joins the company's history at its effective time (the company is created when
  new). A sequence the company already has is a duplicate when its content is the same, and a **conflict** when it is
  not: recorded, not applied, visible. Nothing is ignored for arriving late or out of order.
* `company.upserted`: creates or renames the company; `identifier` absent leaves it, `null` clears it; a deleted
  company is restored.
* `company.deleted`: the company is marked deleted; its billing stops at the end of the current period.
* Unknown types are kept and marked `unknown_type`.

Each delivery gets its outcome in the inbox and a line in the audit trail; companies whose billing the batch changed
are marked due (a change dated in the future: due on its day, when it takes effect).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import table_of
from app.db.models import (
    AuditEvent,
    ChangeStatus,
    Company,
    DeliveryOutcome,
    DeliveryStatus,
    LicenseChange,
    Tenant,
    WebhookInbox,
)
from app.db.upsert import is_postgres
from app.domain.events import CompanyDeleted, CompanyUpserted, Event, LicenseCountChanged, PortalEvent, identifier_given
from app.domain.periods import local_day
from app.logging import get_logger
from app.services.companies import lock_or_create_company
from app.services.sync_schedule import Due, billing_applies, mark_many_due, reconcile_wanted, record_status

log = get_logger("app.applier")
BATCH = 500


@dataclass(slots=True)
class _Batch:
    """What one batch decided, written at its end."""

    now: datetime
    changes: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    touched: dict[str, Company] = field(default_factory=dict)  # companies whose rows changed
    status_reasons: dict[str, str] = field(default_factory=dict)  # companies whose billing may have started or stopped
    due: dict[str, Due] = field(default_factory=dict)


async def apply_pending(session: AsyncSession, *, now: datetime, limit: int = BATCH) -> int:
    """Apply up to `limit` pending deliveries in the caller's transaction; how many were applied."""
    statement = (
        select(WebhookInbox)
        .where(WebhookInbox.status == DeliveryStatus.pending.value)
        .order_by(WebhookInbox.id)
        .limit(limit)
    )
    if is_postgres(session):
        statement = statement.with_for_update(skip_locked=True)
    rows = list(await session.scalars(statement))
    if not rows:
        return 0
    await _apply(session, rows, now=now)
    return len(rows)


def _parse(row: WebhookInbox) -> Event | Exception | None:
    try:
        return PortalEvent.model_validate(row.payload).root
    except ValidationError as exc:
        return exc if row.event_type in ("license.count_changed", "company.upserted", "company.deleted") else None


async def _apply(session: AsyncSession, rows: Sequence[WebhookInbox], *, now: datetime) -> None:
    tenants = {t.id: t for t in await session.scalars(select(Tenant).where(Tenant.id.in_({r.tenant_id for r in rows})))}
    events = [_parse(row) for row in rows]
    wanted = {
        (row.tenant_id, event.data.company_id)
        for row, event in zip(rows, events, strict=True)
        if isinstance(event, LicenseCountChanged | CompanyUpserted | CompanyDeleted)
    }
    companies = await _companies(session, wanted)
    known = await _known_sequences(
        session,
        [
            (companies[(row.tenant_id, e.data.company_id)].id, e.data.sequence)
            for row, e in zip(rows, events, strict=True)
            if isinstance(e, LicenseCountChanged) and (row.tenant_id, e.data.company_id) in companies
        ],
    )
    batch = _Batch(now=now)
    for row, event in zip(rows, events, strict=True):
        tenant = tenants[row.tenant_id]
        if isinstance(event, Exception):
            outcome, detail, company = DeliveryOutcome.invalid, str(event)[:500], None
        elif event is None:
            outcome, detail, company = DeliveryOutcome.unknown_type, None, None
        else:
            outcome, detail, company = await _one(session, tenant, row, event, companies, known, batch)
        batch.outcomes.append({"b_id": row.id, "b_outcome": outcome, "b_detail": detail, "b_applied": now})
        batch.audit.append(
            {
                "tenant_id": row.tenant_id,
                "created_at": now,
                "actor": "portal",
                "action": f"webhook.{row.event_type}"[:100],
                "object_type": "company",
                "object_id": (company.external_id if company else _company_ref(row.payload))[:128] or None,
                "before": None,
                "after": {"webhook_id": row.webhook_id, "outcome": outcome, **_summary(event)},
            }
        )
    await _write(session, batch)


def _company_ref(payload: dict[str, Any]) -> str:
    data = payload.get("data")
    return str(data.get("company_id", "")) if isinstance(data, dict) else ""


def _summary(event: Event | Exception | None) -> dict[str, Any]:
    if isinstance(event, LicenseCountChanged):
        data = event.data
        return {
            "license_count": data.license_count,
            "previous_count": data.previous_count,
            "sequence": data.sequence,
            "effective_at": data.effective_at.isoformat() if data.effective_at else None,
        }
    if isinstance(event, CompanyUpserted):
        return {"name": event.data.name, "identifier": event.data.identifier}
    return {}


async def _companies(session: AsyncSession, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], Company]:
    """The companies these (tenant, portal id) pairs name, locked in one order on PostgreSQL."""
    if not wanted:
        return {}
    statement = (
        select(Company)
        .where(tuple_(Company.tenant_id, Company.external_id).in_(sorted(wanted)))
        .order_by(Company.id)
        .execution_options(populate_existing=True)
    )
    if is_postgres(session):
        statement = statement.with_for_update()
    return {(c.tenant_id, c.external_id): c for c in await session.scalars(statement)}


Known = dict[tuple[str, int], tuple[int, datetime]]  # (company, sequence) -> (count, effective_at) accepted


async def _known_sequences(session: AsyncSession, pairs: list[tuple[str, int]]) -> Known:
    """The accepted changes the batch's (company, sequence) pairs already have."""
    if not pairs:
        return {}
    found: Known = {}
    unique = sorted(set(pairs))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        rows = await session.scalars(
            select(LicenseChange).where(
                LicenseChange.status == ChangeStatus.accepted.value,
                or_(*(and_(LicenseChange.company_id == c, LicenseChange.sequence == s) for c, s in chunk)),
            )
        )
        found.update({(r.company_id, r.sequence): (r.license_count, r.effective_at) for r in rows})
    return found


async def _one(
    session: AsyncSession,
    tenant: Tenant,
    row: WebhookInbox,
    event: Event,
    companies: dict[tuple[str, str], Company],
    known: Known,
    batch: _Batch,
) -> tuple[DeliveryOutcome, str | None, Company | None]:
    key = (tenant.id, event.data.company_id)
    company = companies.get(key)
    if isinstance(event, CompanyDeleted):
        if company is None:
            return DeliveryOutcome.unknown_company, None, None
        if company.deleted_at is not None:
            return DeliveryOutcome.unknown_company, "already deleted", company
        company.deleted_at = batch.now
        _changed(company, tenant, batch, reason="company_deleted")
        return DeliveryOutcome.deleted, None, company
    created = company is None
    if company is None:
        name = event.data.name if isinstance(event, CompanyUpserted) else event.data.company_name or ""
        company = companies[key] = await lock_or_create_company(
            session, tenant_id=tenant.id, external_id=event.data.company_id, name=name, now=batch.now
        )
    if isinstance(event, CompanyUpserted):
        company.name = event.data.name
        if identifier_given(row.payload):
            company.identifier = event.data.identifier
        restored = company.deleted_at is not None
        company.deleted_at = None
        _changed(company, tenant, batch, reason="company_restored")
        return (
            (DeliveryOutcome.restored if restored else DeliveryOutcome.created if created else DeliveryOutcome.applied),
            None,
            company,
        )
    data = event.data
    if data.company_name:
        company.name = data.company_name
    effective_at = data.effective_at or row.received_at
    same = known.get((company.id, data.sequence))
    if same is not None:
        if same == (data.license_count, effective_at):
            return DeliveryOutcome.duplicate_sequence, None, company
        batch.changes.append(_change_row(company, row, data, effective_at, ChangeStatus.conflict))
        detail = (
            f"sequence {data.sequence} already says {same[0]} licenses from {same[1].isoformat()}; this delivery "
            f"says {data.license_count} from {effective_at.isoformat()}"
        )
        return DeliveryOutcome.conflict, detail, company
    batch.changes.append(_change_row(company, row, data, effective_at, ChangeStatus.accepted))
    known[(company.id, data.sequence)] = (data.license_count, effective_at)
    day = local_day(effective_at, tenant.timezone)
    today = local_day(batch.now, tenant.timezone)
    current = (company.count_day, company.count_sequence or 0) if company.count_day is not None else None
    if day <= today and (current is None or (day, data.sequence) > current):
        company.license_count, company.count_day, company.count_sequence = data.license_count, day, data.sequence
    batch.touched[company.id] = company
    if reconcile_wanted(tenant, company):
        at = batch.now if day <= today else _midnight(day, tenant.timezone)
        _due(batch, company, at)
        if day > today:  # it also changes what is billed now (the next period's base, this period's proration)
            _due(batch, company, batch.now)
    return DeliveryOutcome.applied, ("company created" if created else None), company


def _changed(company: Company, tenant: Tenant, batch: _Batch, *, reason: str) -> None:
    batch.touched[company.id] = company
    if billing_applies(company) != company.billing_active:
        batch.status_reasons[company.id] = reason  # recorded in `_write`
    if reconcile_wanted(tenant, company):
        _due(batch, company, batch.now)


def _due(batch: _Batch, company: Company, at: datetime) -> None:
    current = batch.due.get(company.id)
    if current is None:
        batch.due[company.id] = Due(company.id, company.tenant_id, at)
    else:
        batch.due[company.id] = Due(company.id, company.tenant_id, min(current.due_at, at), current.changes + 1)


def _midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone))


def _change_row(
    company: Company, row: WebhookInbox, data: Any, effective_at: datetime, status: ChangeStatus
) -> dict[str, Any]:
    return {
        "tenant_id": company.tenant_id,
        "company_id": company.id,
        "webhook_id": row.webhook_id,
        "sequence": data.sequence,
        "license_count": data.license_count,
        "previous_count": data.previous_count,
        "effective_at": effective_at,
        "received_at": row.received_at,
        "status": status.value,
        "source": "portal",
    }


async def _write(session: AsyncSession, batch: _Batch) -> None:
    for company in batch.touched.values():
        company.updated_at = batch.now
        if company.id in batch.status_reasons:
            record_status(session, company, at=batch.now, reason=batch.status_reasons[company.id])
    await session.flush()
    if batch.changes:
        await session.execute(insert(LicenseChange), batch.changes)
    await mark_many_due(session, list(batch.due.values()), reason="license_change")
    if batch.audit:
        await session.execute(insert(AuditEvent), batch.audit)
    inbox = table_of(WebhookInbox)
    await session.execute(
        update(inbox)
        .where(inbox.c.id == bindparam("b_id"))
        .values(
            status=DeliveryStatus.applied.value,
            outcome=bindparam("b_outcome"),
            detail=bindparam("b_detail"),
            applied_at=bindparam("b_applied"),
        ),
        batch.outcomes,
    )
