"""Applying verified portal events inside one transaction (no CW call here).

`accept_events` takes a whole batch — the deliveries that arrived while the previous transaction was committing, see
`app/services/intake_queue.py` — and applies them in arrival order with a handful of statements for the lot: the
inbox rows first (the idempotency record: a delivery whose `(tenant, webhook-id)` is already there has no effect),
then the companies, locked in one sorted statement, the ledger rows, and the sync states of the companies that now
need a reconcile. The statements are built once per dialect and run on the transaction's Core connection: on this
path SQLAlchemy's statement building and ORM bookkeeping would cost more than the database does.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Select, Update, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.api.schemas.webhooks import CompanyDeleted, CompanyUpserted, LicenseCountChanged
from app.db.base import new_id, table_of, utcnow
from app.db.models import Company, LicenseChange, SyncState, Tenant, WebhookInbox
from app.services.sync_schedule import BillingSwitch, mark_due_statement, sync_eligible

Event = LicenseCountChanged | CompanyUpserted | CompanyDeleted

_INBOX = table_of(WebhookInbox)
_COMPANY = table_of(Company)
_LEDGER = table_of(LicenseChange)
_SYNC_STATE = table_of(SyncState)

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


@dataclass(slots=True)
class _CompanyState:
    """The columns of a company row the intake reads and writes, changed in memory and written back once."""

    id: str
    external_id: str
    name: str
    identifier: str | None
    license_count: int
    last_sequence: int | None
    deleted_at: datetime | None
    billing_enabled: bool
    cw_agreement_id: int | None
    changed: bool = False


async def accept_event(
    session: AsyncSession, *, tenant: Tenant, webhook_id: str, event: Event | None, payload: dict[str, Any]
) -> IntakeResult:
    """One delivery on its own, in the session's transaction (the batch path with a batch of one)."""
    delivery = Delivery(tenant_id=tenant.id, webhook_id=webhook_id, event=event, payload=payload)
    return (await accept_events(await session.connection(), [delivery], {tenant.id: tenant}))[0]


async def accept_events(
    conn: AsyncConnection, deliveries: Sequence[Delivery], tenants: Mapping[str, BillingSwitch]
) -> list[IntakeResult]:
    """Apply each delivery once per (tenant, webhook-id), in the given order; one result per delivery.

    Runs inside the caller's transaction; nothing is committed here. A delivery already recorded — by an earlier
    transaction, a concurrent one (PostgreSQL makes the second insert wait for the first to commit), or earlier in
    this batch — is a duplicate and changes nothing.
    """
    sql = _statements(conn.dialect.name)
    fresh = await _record_in_inbox(conn, sql, deliveries)
    companies = await _lock_companies(conn, sql, [d for i, d in enumerate(deliveries) if i in fresh])
    ledger: list[dict[str, Any]] = []
    scheduled: Counter[tuple[str, str]] = Counter()  # (tenant, company) -> number of changes that need a reconcile
    outcomes: dict[int, str] = {}
    for index, delivery in enumerate(deliveries):
        if index not in fresh:
            continue
        event = delivery.event
        company = companies.get((delivery.tenant_id, event.data.company_id)) if event is not None else None
        if isinstance(event, LicenseCountChanged) and company is not None:
            outcome = _license_changed(tenants[delivery.tenant_id], company, event, delivery, ledger, scheduled)
        elif isinstance(event, CompanyUpserted) and company is not None:
            outcome = _company_upserted(company, event)
        elif isinstance(event, CompanyDeleted):
            outcome = _company_deleted(company)
        else:
            outcome = "unknown_type"
        outcomes[index] = outcome
    await _write_companies(conn, sql, companies.values())
    if ledger:
        await conn.execute(sql.insert_ledger, ledger)
    if scheduled:
        now = utcnow()
        await conn.execute(
            sql.mark_due,
            [  # in company order: the order every writer locks sync states in
                {"company_id": company, "tenant_id": tenant, "reason": "license_change", "due_at": now, "generation": n}
                for (tenant, company), n in sorted(scheduled.items(), key=lambda item: item[0][1])
            ],
        )
    corrections = [
        {"b_tenant": deliveries[i].tenant_id, "b_webhook": deliveries[i].webhook_id, "b_outcome": outcome}
        for i, outcome in outcomes.items()
        if outcome != _DEFAULT_OUTCOME
    ]
    if corrections:
        await conn.execute(sql.correct_outcome, corrections)
    return [
        IntakeResult(duplicate=False, outcome=outcomes[i]) if i in fresh else IntakeResult(True, "duplicate")
        for i in range(len(deliveries))
    ]


@dataclass(frozen=True, slots=True)
class _Statements:
    insert_inbox: Insert
    correct_outcome: Update
    select_companies: Select[Any]
    insert_companies: Insert
    insert_sync_states: Insert
    update_companies: Update
    insert_ledger: Insert
    mark_due: Insert


@functools.cache
def _statements(dialect: str) -> _Statements:
    """Every statement of the intake, built once (their compiled forms are then cached by SQLAlchemy)."""
    postgres = dialect == "postgresql"
    builder = pg_insert if postgres else sqlite_insert
    inbox, company = _INBOX.c, _COMPANY.c
    select_companies = (
        select(
            company.id,
            company.external_id,
            company.name,
            company.identifier,
            company.license_count,
            company.last_sequence,
            company.deleted_at,
            company.billing_enabled,
            company.cw_agreement_id,
        )
        .where(
            company.tenant_id == bindparam("tenant_id"),
            company.external_id.in_(bindparam("external_ids", expanding=True)),
        )
        .order_by(company.id)  # rows are locked in this order: the same for every writer
    )
    return _Statements(
        insert_inbox=builder(_INBOX)
        .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id"])
        .returning(inbox.tenant_id, inbox.webhook_id),
        correct_outcome=update(_INBOX)
        .where(inbox.tenant_id == bindparam("b_tenant"), inbox.webhook_id == bindparam("b_webhook"))
        .values(outcome=bindparam("b_outcome")),
        select_companies=select_companies.with_for_update() if postgres else select_companies,
        insert_companies=builder(_COMPANY)
        .on_conflict_do_nothing(index_elements=["tenant_id", "external_id"])
        .returning(company.id, company.tenant_id),
        insert_sync_states=insert(_SYNC_STATE),
        update_companies=update(_COMPANY)
        .where(company.id == bindparam("b_id"))
        .values(
            name=bindparam("b_name"),
            identifier=bindparam("b_identifier"),
            license_count=bindparam("b_count"),
            last_sequence=bindparam("b_sequence"),
            deleted_at=bindparam("b_deleted"),
            updated_at=bindparam("b_updated"),
        ),
        insert_ledger=insert(_LEDGER),
        mark_due=mark_due_statement(dialect),
    )


async def _record_in_inbox(conn: AsyncConnection, sql: _Statements, deliveries: Sequence[Delivery]) -> set[int]:
    """Insert the inbox rows; the indexes of the deliveries this transaction recorded first."""
    first: dict[tuple[str, str], int] = {}
    for index, delivery in enumerate(deliveries):
        first.setdefault((delivery.tenant_id, delivery.webhook_id), index)
    if not first:
        return set()
    rows = [
        {
            "tenant_id": tenant_id,
            "webhook_id": webhook_id,
            "event_type": str(deliveries[index].payload.get("type", ""))[:64],
            "received_at": deliveries[index].received_at,
            "outcome": _DEFAULT_OUTCOME,
            "payload": deliveries[index].payload,
        }
        for (tenant_id, webhook_id), index in sorted(first.items())  # one order for every writer: no deadlocks
    ]
    inserted = (await conn.execute(sql.insert_inbox, rows)).all()
    return {first[(row.tenant_id, row.webhook_id)] for row in inserted}


async def _lock_companies(
    conn: AsyncConnection, sql: _Statements, deliveries: Sequence[Delivery]
) -> dict[tuple[str, str], _CompanyState]:
    """The companies these deliveries are about, keyed by (tenant, portal id), locked for this transaction on
    PostgreSQL (SQLite transactions are already serialized). Companies a license change or an upsert mentions for
    the first time are created, with their sync state."""
    wanted: dict[str, set[str]] = {}
    creatable: dict[tuple[str, str], str] = {}  # (tenant, portal id) -> name to create it with
    for delivery in deliveries:
        event = delivery.event
        if event is None:
            continue
        wanted.setdefault(delivery.tenant_id, set()).add(event.data.company_id)
        if isinstance(event, LicenseCountChanged):
            creatable.setdefault((delivery.tenant_id, event.data.company_id), event.data.company_name or "")
        elif isinstance(event, CompanyUpserted):
            creatable.setdefault((delivery.tenant_id, event.data.company_id), event.data.name)
    companies = await _select_companies(conn, sql, wanted)
    missing = sorted(key for key in creatable if key not in companies)
    if missing:
        now = utcnow()
        rows = [
            {
                "id": new_id(),
                "tenant_id": tenant_id,
                "external_id": external_id,
                "name": creatable[(tenant_id, external_id)] or external_id,
                "license_count": 0,
                "billing_enabled": False,
                "created_at": now,
                "updated_at": now,
            }
            for tenant_id, external_id in missing
        ]
        inserted = (await conn.execute(sql.insert_companies, rows)).all()
        if inserted:
            await conn.execute(
                sql.insert_sync_states,
                [
                    {"company_id": r.id, "tenant_id": r.tenant_id, "status": "in_sync", "generation": 0, "attempts": 0}
                    for r in inserted
                ],
            )
        again: dict[str, set[str]] = {}
        for tenant_id, external_id in missing:
            again.setdefault(tenant_id, set()).add(external_id)
        # Created now, or by a concurrent transaction that committed first: either way they are there to lock.
        companies.update(await _select_companies(conn, sql, again))
    return companies


async def _select_companies(
    conn: AsyncConnection, sql: _Statements, wanted: Mapping[str, set[str]]
) -> dict[tuple[str, str], _CompanyState]:
    found: dict[tuple[str, str], _CompanyState] = {}
    for tenant_id in sorted(wanted):
        rows = await conn.execute(
            sql.select_companies, {"tenant_id": tenant_id, "external_ids": sorted(wanted[tenant_id])}
        )
        for row in rows:
            found[(tenant_id, row.external_id)] = _CompanyState(*row)
    return found


async def _write_companies(conn: AsyncConnection, sql: _Statements, companies: Iterable[_CompanyState]) -> None:
    changed = sorted((c for c in companies if c.changed), key=lambda c: c.id)
    if not changed:
        return
    now = utcnow()
    await conn.execute(
        sql.update_companies,
        [
            {
                "b_id": c.id,
                "b_name": c.name,
                "b_identifier": c.identifier,
                "b_count": c.license_count,
                "b_sequence": c.last_sequence,
                "b_deleted": c.deleted_at,
                "b_updated": now,
            }
            for c in changed
        ],
    )


def _license_changed(
    tenant: BillingSwitch,
    company: _CompanyState,
    event: LicenseCountChanged,
    delivery: Delivery,
    ledger: list[dict[str, Any]],
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
        {
            "tenant_id": tenant.id,
            "company_id": company.id,
            "webhook_id": delivery.webhook_id,
            "sequence": sequence,
            "license_count": data.license_count,
            "previous_count": data.previous_count,
            "effective_at": data.effective_at or delivery.received_at,
            "received_at": delivery.received_at,
            "ignored_reason": ignored,
        }
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


def _company_upserted(company: _CompanyState, event: CompanyUpserted) -> str:
    company.name = event.data.name
    company.identifier = event.data.identifier
    company.changed = True
    if company.deleted_at is not None:
        company.deleted_at = None
        return "restored"
    return "applied"


def _company_deleted(company: _CompanyState | None) -> str:
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
