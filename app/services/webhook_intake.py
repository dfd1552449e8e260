"""Applying one verified portal event, inside the request's single transaction (no CW call here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.webhooks import CompanyDeleted, CompanyUpserted, LicenseCountChanged
from app.db.base import utcnow
from app.db.models import Company, LicenseChange, Tenant, WebhookInbox
from app.db.upsert import insert_ignore
from app.services.companies import lock_or_create_company
from app.services.sync_schedule import schedule_sync, sync_eligible

Event = LicenseCountChanged | CompanyUpserted | CompanyDeleted


@dataclass(frozen=True, slots=True)
class IntakeResult:
    duplicate: bool
    outcome: str


async def _license_changed(
    session: AsyncSession, *, tenant: Tenant, event: LicenseCountChanged, webhook_id: str, received_at: datetime
) -> str:
    data = event.data
    company = await lock_or_create_company(
        session, tenant_id=tenant.id, external_id=data.company_id, name=data.company_name or data.company_id
    )
    last = company.last_sequence
    sequence = data.sequence if data.sequence is not None else (last or 0) + 1
    if company.deleted_at is not None:
        ignored: str | None = "company_deleted"
    elif last is not None and sequence <= last:
        ignored = "stale_sequence"
    else:
        ignored = None
    session.add(
        LicenseChange(
            tenant_id=tenant.id,
            company_id=company.id,
            webhook_id=webhook_id,
            sequence=sequence,
            license_count=data.license_count,
            previous_count=data.previous_count,
            effective_at=data.effective_at or received_at,
            received_at=received_at,
            ignored_reason=ignored,
        )
    )
    if ignored:
        return ignored
    company.license_count = data.license_count
    company.last_sequence = sequence
    if data.company_name:
        company.name = data.company_name
    if sync_eligible(tenant, company):
        await schedule_sync(session, tenant_id=tenant.id, company_id=company.id, reason="license_change")
    return "applied"


async def _company_upserted(session: AsyncSession, *, tenant: Tenant, event: CompanyUpserted) -> str:
    company = await lock_or_create_company(
        session, tenant_id=tenant.id, external_id=event.data.company_id, name=event.data.name
    )
    company.name = event.data.name
    company.identifier = event.data.identifier
    if company.deleted_at is not None:
        company.deleted_at = None
        return "restored"
    return "applied"


async def _company_deleted(session: AsyncSession, *, tenant: Tenant, event: CompanyDeleted) -> str:
    result = await session.execute(
        update(Company)
        .where(
            Company.tenant_id == tenant.id, Company.external_id == event.data.company_id, Company.deleted_at.is_(None)
        )
        .values(deleted_at=utcnow())
    )
    # The CW addition is left as it is: stopping billing for a customer is the MSP's call, not ours.
    return "applied" if result.rowcount else "unknown_company"  # type: ignore[attr-defined]


async def accept_event(
    session: AsyncSession,
    *,
    tenant: Tenant,
    webhook_id: str,
    event: Event | None,
    payload: dict[str, Any],
) -> IntakeResult:
    """Apply the event, then record the delivery once per (tenant, webhook-id).

    The inbox row goes in last, with the outcome: if another delivery of the same id got there first, this one
    reports a duplicate and the caller (which owns the transaction) rolls its effects back — no second effect.
    """
    received_at = utcnow()
    if isinstance(event, LicenseCountChanged):
        outcome = await _license_changed(
            session, tenant=tenant, event=event, webhook_id=webhook_id, received_at=received_at
        )
    elif isinstance(event, CompanyUpserted):
        outcome = await _company_upserted(session, tenant=tenant, event=event)
    elif isinstance(event, CompanyDeleted):
        outcome = await _company_deleted(session, tenant=tenant, event=event)
    else:
        outcome = "unknown_type"
    inserted = await insert_ignore(
        session,
        WebhookInbox,
        {
            "tenant_id": tenant.id,
            "webhook_id": webhook_id,
            "event_type": str(payload.get("type", ""))[:64],
            "received_at": received_at,
            "outcome": outcome,
            "payload": payload,
        },
        conflict=("tenant_id", "webhook_id"),
    )
    if not inserted:
        return IntakeResult(duplicate=True, outcome="duplicate")
    return IntakeResult(duplicate=False, outcome=outcome)


INBOX_RETENTION = timedelta(days=8)  # at least the 7 days within which a redelivery must have no effect


async def purge_inbox(session: AsyncSession, *, retention: timedelta = INBOX_RETENTION) -> int:
    result = await session.execute(delete(WebhookInbox).where(WebhookInbox.received_at < utcnow() - retention))
    return int(result.rowcount)  # type: ignore[attr-defined]
