"""Applying verified portal events inside one transaction (no CW call here).

`accept_events` takes a whole batch — the deliveries that arrived while the previous transaction was committing, see
`app/services/intake_queue.py` — and applies them in arrival order with a handful of statements for the lot: the
inbox rows first (the idempotency record: a delivery whose `(tenant, webhook-id)` is already there has no effect),
then the companies, locked in one sorted statement, the ledger rows, and the sync states of the companies that now
need a reconcile. The statements themselves live in `app/db/intake_store.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.webhooks import CompanyDeleted, CompanyUpserted, LicenseCountChanged
from app.db.base import new_id, utcnow
from app.db.intake_store import (
    BatchColumns,
    Changes,
    CompanyState,
    CoreIntakeStore,
    DueRow,
    InboxRow,
    LedgerRow,
    NewCompany,
)
from app.db.models import Tenant, WebhookInbox
from app.services.sync_schedule import BillingSwitch, sync_eligible

Event = LicenseCountChanged | CompanyUpserted | CompanyDeleted

# The inbox row is written before the effects; most deliveries end as "applied", the others are corrected after.
_DEFAULT_OUTCOME = "applied"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified delivery: its tenant, its `webhook-id`, the parsed event (None for an unknown type) and the
    JSON payload as received."""

    tenant_id: str
    webhook_id: str
    event: Event | None
    payload: dict[str, Any]
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    duplicate: bool
    outcome: str


async def accept_event(
    session: AsyncSession, *, tenant: Tenant, webhook_id: str, event: Event | None, payload: dict[str, Any]
) -> IntakeResult:
    """One delivery on its own, in the session's transaction (the batch path with a batch of one)."""
    delivery = Delivery(tenant_id=tenant.id, webhook_id=webhook_id, event=event, payload=payload)
    store = CoreIntakeStore(await session.connection())
    return (await accept_events(store, [delivery], {tenant.id: tenant}))[0]


async def accept_events(
    store: CoreIntakeStore, deliveries: Sequence[Delivery], tenants: Mapping[str, BillingSwitch]
) -> list[IntakeResult]:
    """Apply each delivery once per (tenant, webhook-id), in the given order; one result per delivery.

    Runs inside the caller's transaction; nothing is committed here. A delivery already recorded — by an earlier
    transaction, a concurrent one (PostgreSQL makes the second insert wait for the first to commit), or earlier in
    this batch — is a duplicate and changes nothing.
    """
    fresh = await _record_in_inbox(store, deliveries)
    companies, born = await _lock_companies(store, [(i, d) for i, d in enumerate(deliveries) if i in fresh])
    ledger: list[LedgerRow] = []
    scheduled: Counter[tuple[str, str]] = Counter()  # (tenant, company) -> number of changes that need a reconcile
    outcomes: dict[int, str] = {}
    for index, delivery in enumerate(deliveries):
        if index not in fresh:
            continue
        event = delivery.event
        key = (delivery.tenant_id, event.data.company_id) if event is not None else None
        company = companies.get(key) if key is not None else None
        if key is not None and born.get(key, -1) > index:
            company = None  # created by a later delivery of this batch: not there yet for this one
        if isinstance(event, LicenseCountChanged) and company is not None:
            outcome = _license_changed(tenants[delivery.tenant_id], company, event, delivery, ledger, scheduled)
        elif isinstance(event, CompanyUpserted) and company is not None:
            outcome = _company_upserted(company, event)
        elif isinstance(event, CompanyDeleted):
            outcome = _company_deleted(company)
        else:
            outcome = "unknown_type"
        outcomes[index] = outcome
    changes = Changes(
        now=utcnow(),
        companies=[c for c in companies.values() if c.changed],
        ledger=ledger,
        due=[DueRow(company_id=c, tenant_id=t, changes=n) for (t, c), n in scheduled.items()],
        reason="license_change",
        outcomes=[
            (deliveries[i].tenant_id, deliveries[i].webhook_id, outcome)
            for i, outcome in outcomes.items()
            if outcome != _DEFAULT_OUTCOME
        ],
    )
    if changes.companies or changes.ledger or changes.due or changes.outcomes:
        await store.write(changes)
    return [
        IntakeResult(duplicate=False, outcome=outcomes[i]) if i in fresh else IntakeResult(True, "duplicate")
        for i in range(len(deliveries))
    ]


def batch_columns(items: Iterable[tuple[Delivery, int, str]]) -> BatchColumns:
    """The batch as `accept_batch_on_postgres` takes it: each delivery with the `secrets_version` its signature was
    checked against and its JSON text as received (stored as is in the inbox)."""
    columns = BatchColumns()
    for delivery, secrets_version, payload_text in items:
        event = delivery.event
        columns.tenant.append(delivery.tenant_id)
        columns.webhook.append(delivery.webhook_id)
        columns.secrets_version.append(secrets_version)
        columns.event_type.append(_event_type(delivery))
        columns.payload.append(payload_text)
        columns.received.append(delivery.received_at)
        columns.kind.append(event.type if event is not None else None)
        columns.company.append(event.data.company_id if event is not None else None)
        license_change = event.data if isinstance(event, LicenseCountChanged) else None
        columns.count.append(license_change.license_count if license_change else None)
        columns.previous.append(license_change.previous_count if license_change else None)
        columns.sequence.append(license_change.sequence if license_change else None)
        columns.effective.append(license_change.effective_at if license_change else None)
        upsert = event.data if isinstance(event, CompanyUpserted) else None
        columns.name.append(upsert.name if upsert else license_change.company_name if license_change else None)
        columns.identifier.append(upsert.identifier if upsert else None)
    return columns


def _event_type(delivery: Delivery) -> str:
    return str(delivery.payload.get("type", ""))[:64]


async def _record_in_inbox(store: CoreIntakeStore, deliveries: Sequence[Delivery]) -> set[int]:
    """Insert the inbox rows; the indexes of the deliveries this transaction recorded first."""
    first: dict[tuple[str, str], int] = {}
    for index, delivery in enumerate(deliveries):
        first.setdefault((delivery.tenant_id, delivery.webhook_id), index)
    if not first:
        return set()
    rows = [
        InboxRow(
            tenant_id=tenant_id,
            webhook_id=webhook_id,
            event_type=_event_type(deliveries[index]),
            received_at=deliveries[index].received_at,
            outcome=_DEFAULT_OUTCOME,
            payload=deliveries[index].payload,
        )
        for (tenant_id, webhook_id), index in first.items()
    ]
    return {first[key] for key in await store.record_inbox(rows)}


async def _lock_companies(
    store: CoreIntakeStore, deliveries: Sequence[tuple[int, Delivery]]
) -> tuple[dict[tuple[str, str], CompanyState], dict[tuple[str, str], int]]:
    """The companies these (index, delivery) pairs are about, keyed by (tenant, portal id), locked for this
    transaction on PostgreSQL (SQLite transactions are already serialized). A company a license change or an upsert
    mentions for the first time is created, with its sync state, named by the first of them; the second map holds,
    for each company created here, the index of that delivery."""
    wanted: dict[str, set[str]] = {}
    creatable: dict[tuple[str, str], tuple[int, str]] = {}  # (tenant, portal id) -> (index, name to create it with)
    for index, delivery in deliveries:
        event = delivery.event
        if event is None:
            continue
        wanted.setdefault(delivery.tenant_id, set()).add(event.data.company_id)
        if isinstance(event, LicenseCountChanged):
            creatable.setdefault((delivery.tenant_id, event.data.company_id), (index, event.data.company_name or ""))
        elif isinstance(event, CompanyUpserted):
            creatable.setdefault((delivery.tenant_id, event.data.company_id), (index, event.data.name))
    companies = await _select_companies(store, wanted)
    missing = {
        key: NewCompany(new_id(), *key, creatable[key][1] or key[1]) for key in creatable if key not in companies
    }
    if not missing:
        return companies, {}
    created = await store.create_companies(list(missing.values()), utcnow())
    again: dict[str, set[str]] = {}
    for tenant_id, external_id in missing:
        again.setdefault(tenant_id, set()).add(external_id)
    # Created now, or by a concurrent transaction that committed first: either way they are there to lock.
    companies.update(await _select_companies(store, again))
    return companies, {key: creatable[key][0] for key, new in missing.items() if new.id in created}


async def _select_companies(
    store: CoreIntakeStore, wanted: Mapping[str, set[str]]
) -> dict[tuple[str, str], CompanyState]:
    found: dict[tuple[str, str], CompanyState] = {}
    for tenant_id in sorted(wanted):  # tenants in one order too: every writer locks in the same order
        for company in await store.lock_companies(tenant_id, list(wanted[tenant_id])):
            found[(tenant_id, company.external_id)] = company
    return found


def _license_changed(
    tenant: BillingSwitch,
    company: CompanyState,
    event: LicenseCountChanged,
    delivery: Delivery,
    ledger: list[LedgerRow],
    scheduled: Counter[tuple[str, str]],
) -> str:
    data = event.data
    last = company.last_sequence
    sequence = data.sequence if data.sequence is not None else (last or 0) + 1
    if company.deleted_at is not None:
        ignored: str | None = "company_deleted"
    elif last is not None and sequence <= last:
        ignored = "stale_sequence"  # out of order: recorded, not applied (the newer count is already in force)
    else:
        ignored = None
    ledger.append(
        LedgerRow(
            tenant_id=tenant.id,
            company_id=company.id,
            webhook_id=delivery.webhook_id,
            sequence=sequence,
            license_count=data.license_count,
            previous_count=data.previous_count,
            effective_at=data.effective_at or delivery.received_at,
            received_at=delivery.received_at,
            ignored_reason=ignored,
        )
    )
    if ignored:
        return ignored
    company.license_count = data.license_count
    company.last_sequence = sequence
    if data.company_name:
        company.name = data.company_name
    company.changed = True
    if sync_eligible(tenant, company):
        scheduled[(tenant.id, company.id)] += 1
    return "applied"


def _company_upserted(company: CompanyState, event: CompanyUpserted) -> str:
    company.name = event.data.name
    company.identifier = event.data.identifier
    company.changed = True
    if company.deleted_at is not None:
        company.deleted_at = None
        return "restored"
    return "applied"


def _company_deleted(company: CompanyState | None) -> str:
    if company is None or company.deleted_at is not None:
        return "unknown_company"
    # The CW addition is left as it is: stopping billing for a customer is the MSP's call, not ours.
    company.deleted_at = utcnow()
    company.changed = True
    return "applied"


INBOX_RETENTION = timedelta(days=8)  # at least the 7 days within which a redelivery must have no effect


async def purge_inbox(session: AsyncSession, *, retention: timedelta = INBOX_RETENTION) -> int:
    result = await session.execute(delete(WebhookInbox).where(WebhookInbox.received_at < utcnow() - retention))
    return int(result.rowcount)  # type: ignore[attr-defined]
