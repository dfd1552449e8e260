"""The statements of webhook intake (`app/services/webhook_intake.py`).

A batch of deliveries is applied in one of two ways, to the same rows:

* `CoreIntakeStore`, driven by the rules in `accept_events` — SQLAlchemy Core statements built once per dialect,
  run inside the caller's transaction; SQLite and PostgreSQL. The reference.
* `accept_batch_on_postgres` — what the service uses for webhooks on PostgreSQL: the whole batch (inbox, company
  locks, decisions, writes) in one call of the `accept_webhook_batch` function, so one round trip and one commit.

`tests/db/test_intake_store.py` applies the same batches through both on PostgreSQL and compares every row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Insert, Select, Update, bindparam, case, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.base import table_of
from app.db.models import Company, LicenseChange, SyncState, Tenant, WebhookInbox
from app.db.upsert import upsert_insert

_INBOX = table_of(WebhookInbox)
_COMPANY = table_of(Company)
_LEDGER = table_of(LicenseChange)
_SYNC_STATE = table_of(SyncState)
_TENANT = table_of(Tenant)


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: str
    secrets_version: int
    billing_enabled: bool


@dataclass(slots=True)
class CompanyState:
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


@dataclass(frozen=True, slots=True)
class InboxRow:
    tenant_id: str
    webhook_id: str
    event_type: str
    received_at: datetime
    outcome: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewCompany:
    id: str
    tenant_id: str
    external_id: str
    name: str


@dataclass(frozen=True, slots=True)
class LedgerRow:
    tenant_id: str
    company_id: str
    webhook_id: str
    sequence: int
    license_count: int
    previous_count: int | None
    effective_at: datetime
    received_at: datetime
    ignored_reason: str | None


@dataclass(frozen=True, slots=True)
class DueRow:
    """A company that needs a reconcile because of `changes` more changes (see `sync_schedule.mark_due`)."""

    company_id: str
    tenant_id: str
    changes: int


@dataclass(frozen=True, slots=True)
class Changes:
    """What a batch writes once it has decided: company rows, ledger rows, the companies now due for a reconcile
    (`reason`, due by `now`; see `sync_schedule.mark_due`), and the inbox rows whose outcome is not the one they were
    inserted with, as (tenant, webhook-id, outcome)."""

    now: datetime
    companies: Sequence[CompanyState] = ()
    ledger: Sequence[LedgerRow] = ()
    due: Sequence[DueRow] = ()
    reason: str = "license_change"
    outcomes: Sequence[tuple[str, str, str]] = ()


def _ordered(rows: Sequence[Any], *keys: str) -> list[Any]:
    """Rows in one order for every writer: locks are then always taken in the same order (no deadlocks)."""
    return sorted(rows, key=lambda r: tuple(getattr(r, k) for k in keys))


# ------------------------------------------------------------------------------------------- SQLAlchemy Core
class CoreIntakeStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.sql = _core_statements(conn.dialect.name)

    async def tenants(self, ids: Sequence[str]) -> dict[str, TenantRow]:
        rows = await self.conn.execute(self.sql.select_tenants, {"ids": sorted(ids)})
        return {row.id: TenantRow(*row) for row in rows}

    async def record_inbox(self, rows: Sequence[InboxRow]) -> set[tuple[str, str]]:
        params = [
            {
                "tenant_id": r.tenant_id,
                "webhook_id": r.webhook_id,
                "event_type": r.event_type,
                "received_at": r.received_at,
                "outcome": r.outcome,
                "payload": r.payload,
            }
            for r in _ordered(rows, "tenant_id", "webhook_id")
        ]
        return {(r.tenant_id, r.webhook_id) for r in await self.conn.execute(self.sql.insert_inbox, params)}

    async def lock_companies(self, tenant_id: str, external_ids: Sequence[str]) -> list[CompanyState]:
        rows = await self.conn.execute(
            self.sql.select_companies, {"tenant_id": tenant_id, "external_ids": sorted(external_ids)}
        )
        return [CompanyState(*row) for row in rows]

    async def create_companies(self, rows: Sequence[NewCompany], now: datetime) -> set[str]:
        """Insert unless (tenant, portal id) exists, each with an in-sync sync state; the ids inserted."""
        params = [
            {
                "id": r.id,
                "tenant_id": r.tenant_id,
                "external_id": r.external_id,
                "name": r.name,
                "license_count": 0,
                "billing_enabled": False,
                "created_at": now,
                "updated_at": now,
            }
            for r in _ordered(rows, "tenant_id", "external_id")
        ]
        inserted = (await self.conn.execute(self.sql.insert_companies, params)).all()
        if inserted:
            await self.conn.execute(
                self.sql.insert_sync_states,
                [
                    {"company_id": r.id, "tenant_id": r.tenant_id, "status": "in_sync", "generation": 0, "attempts": 0}
                    for r in inserted
                ],
            )
        return {r.id for r in inserted}

    async def write(self, changes: Changes) -> None:
        if changes.companies:
            await self._update_companies(changes.companies, changes.now)
        if changes.ledger:
            await self.conn.execute(self.sql.insert_ledger, [_ledger_params(r) for r in changes.ledger])
        if changes.due:
            await self._mark_due(changes.due, reason=changes.reason, due=changes.now)
        if changes.outcomes:
            await self.conn.execute(
                self.sql.correct_outcome,
                [{"b_tenant": t, "b_webhook": w, "b_outcome": o} for t, w, o in changes.outcomes],
            )

    async def _update_companies(self, companies: Sequence[CompanyState], now: datetime) -> None:
        params = [
            {
                "b_id": c.id,
                "b_name": c.name,
                "b_identifier": c.identifier,
                "b_count": c.license_count,
                "b_sequence": c.last_sequence,
                "b_deleted": c.deleted_at,
                "b_updated": now,
            }
            for c in _ordered(companies, "id")
        ]
        await self.conn.execute(self.sql.update_companies, params)

    async def _mark_due(self, rows: Sequence[DueRow], *, reason: str, due: datetime) -> None:
        params = [
            {
                "company_id": r.company_id,
                "tenant_id": r.tenant_id,
                "reason": reason,
                "due_at": due,
                "generation": r.changes,
            }
            for r in _ordered(rows, "company_id")
        ]
        await self.conn.execute(self.sql.mark_due, params)


LEDGER_COLUMNS = tuple(f.name for f in fields(LedgerRow))  # named as the license_change columns they fill


def _ledger_params(r: LedgerRow) -> dict[str, Any]:
    return {name: getattr(r, name) for name in LEDGER_COLUMNS}


@dataclass(frozen=True, slots=True)
class _CoreStatements:
    select_tenants: Select[Any]
    insert_inbox: Insert
    correct_outcome: Update
    select_companies: Select[Any]
    insert_companies: Insert
    insert_sync_states: Insert
    update_companies: Update
    insert_ledger: Insert
    mark_due: Insert


def mark_due_statement(dialect: str) -> Insert:
    """`sync_schedule.mark_due` for many companies in one executemany, creating a missing sync state on the way.
    Parameters per company: `company_id`, `tenant_id`, `reason`, `due_at` and `generation` (the number of changes)."""
    builder = upsert_insert(dialect)
    statement = builder(_SYNC_STATE).values(status="pending", attempts=0)
    current, new = _SYNC_STATE.c, statement.excluded
    settled = (current.status == "in_sync") | (current.status == "failed")  # no IN: executemany can't expand it
    return statement.on_conflict_do_update(
        index_elements=[current.company_id],
        set_={
            "generation": current.generation + new.generation,
            "reason": new.reason,
            "due_at": case(
                (current.due_at.is_(None) | (current.due_at > new.due_at), new.due_at), else_=current.due_at
            ),
            "status": case((settled, "pending"), else_=current.status),
            "attempts": case((settled, 0), else_=current.attempts),
        },
    )


@functools.cache
def _core_statements(dialect: str) -> _CoreStatements:
    """Built once per dialect (their compiled forms are then cached by SQLAlchemy)."""
    postgres = dialect == "postgresql"
    builder = upsert_insert(dialect)
    inbox, company, tenant = _INBOX.c, _COMPANY.c, _TENANT.c
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
        .order_by(company.id)
    )
    return _CoreStatements(
        select_tenants=select(tenant.id, tenant.secrets_version, tenant.billing_enabled).where(
            tenant.id.in_(bindparam("ids", expanding=True))
        ),
        insert_inbox=builder(_INBOX)
        .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id"])
        .returning(inbox.tenant_id, inbox.webhook_id),
        correct_outcome=update(_INBOX)
        .where(inbox.tenant_id == bindparam("b_tenant"), inbox.webhook_id == bindparam("b_webhook"))
        .values(outcome=bindparam("b_outcome")),
        select_companies=select_companies.with_for_update(key_share=True) if postgres else select_companies,
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


# ------------------------------------------------------------------------------------------- PostgreSQL
# `accept_webhook_batch` is made by the migration 3824354691a8: the rules of `accept_events`, in the database.
_ACCEPT_BATCH = "SELECT accept_webhook_batch(" + ", ".join(f"${i}" for i in range(1, 16)) + ")"


@dataclass(slots=True)
class BatchColumns:
    """A batch as the arrays `accept_webhook_batch` takes, one element per delivery in arrival order."""

    tenant: list[str] = field(default_factory=list)
    webhook: list[str] = field(default_factory=list)
    secrets_version: list[int] = field(default_factory=list)
    event_type: list[str] = field(default_factory=list)
    payload: list[str] = field(default_factory=list)  # the JSON text as received
    received: list[datetime] = field(default_factory=list)
    kind: list[str | None] = field(default_factory=list)  # the event type if understood, else None
    company: list[str | None] = field(default_factory=list)
    count: list[int | None] = field(default_factory=list)
    previous: list[int | None] = field(default_factory=list)
    sequence: list[int | None] = field(default_factory=list)
    effective: list[datetime | None] = field(default_factory=list)
    name: list[str | None] = field(default_factory=list)
    identifier: list[str | None] = field(default_factory=list)

    def arrays(self) -> tuple[list[Any], ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


async def accept_batch_on_postgres(conn: asyncpg.Connection, columns: BatchColumns, *, now: datetime) -> list[str]:
    """Apply the batch in one statement — its own transaction, committed when this returns. One outcome per
    delivery: those of `accept_events`, "duplicate", "recheck" (secrets rotated since the check) or
    "unknown_tenant"."""
    outcomes: list[str] = await conn.fetchval(_ACCEPT_BATCH, *columns.arrays(), now)
    return outcomes
