"""The statements of webhook intake (`app/services/webhook_intake.py`), behind one small interface.

Two implementations run the same operations, each inside the caller's transaction:

* `CoreIntakeStore` — SQLAlchemy Core statements built once per dialect; SQLite and PostgreSQL. The reference.
* `AsyncpgIntakeStore` — the same operations as hand-written PostgreSQL on the asyncpg driver, each one a single
  statement over arrays (`unnest`), prepared once per connection, and all of a batch's writes in one. A batch of
  eight cost 2.1 ms of Python CPU through SQLAlchemy and 0.8 ms on the driver alone; this is what the service uses
  for webhooks on PostgreSQL.

`tests/db/test_intake_store.py` applies the same batches through both on PostgreSQL and compares every row.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

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


class IntakeStore(Protocol):
    async def tenants(self, ids: Sequence[str]) -> dict[str, TenantRow]: ...

    async def record_inbox(self, rows: Sequence[InboxRow]) -> set[tuple[str, str]]:
        """Insert unless (tenant, webhook-id) is there; the keys inserted now."""
        ...

    async def lock_companies(self, tenant_id: str, external_ids: Sequence[str]) -> list[CompanyState]:
        """The tenant's companies with these portal ids, locked in id order (PostgreSQL)."""
        ...

    async def create_companies(self, rows: Sequence[NewCompany], now: datetime) -> None:
        """Insert unless (tenant, portal id) exists, each with an in-sync sync state."""
        ...

    async def write(self, changes: Changes) -> None:
        """Everything the batch decided, written at once."""
        ...


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

    async def create_companies(self, rows: Sequence[NewCompany], now: datetime) -> None:
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


# ------------------------------------------------------------------------------------------- asyncpg (PostgreSQL)
_PG_TENANTS = "SELECT id, secrets_version, billing_enabled FROM tenant WHERE id = ANY($1::varchar[])"
_PG_INBOX = """
INSERT INTO webhook_inbox (tenant_id, webhook_id, event_type, received_at, outcome, payload)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::timestamptz[], $5::varchar[], $6::json[])
ON CONFLICT (tenant_id, webhook_id) DO NOTHING
RETURNING tenant_id, webhook_id"""
_PG_COMPANIES = """
SELECT id, external_id, name, identifier, license_count, last_sequence, deleted_at, billing_enabled, cw_agreement_id
FROM company WHERE tenant_id = $1 AND external_id = ANY($2::varchar[])
ORDER BY id FOR UPDATE"""
_PG_NEW_COMPANIES = """
INSERT INTO company (id, tenant_id, external_id, name, license_count, billing_enabled, created_at, updated_at)
SELECT u.id, u.tenant_id, u.external_id, u.name, 0, false, $5, $5
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[]) AS u(id, tenant_id, external_id, name)
ON CONFLICT (tenant_id, external_id) DO NOTHING
RETURNING id, tenant_id"""
_PG_NEW_SYNC_STATES = """
INSERT INTO sync_state (company_id, tenant_id, status, generation, attempts)
SELECT u.company_id, u.tenant_id, 'in_sync', 0, 0
FROM unnest($1::varchar[], $2::varchar[]) AS u(company_id, tenant_id)"""
# One statement for everything a batch writes (data-modifying CTEs all run, whatever the final SELECT reads): four
# round trips fewer per batch. The sync-state part is the rule of `sync_schedule.mark_due`: more changes, due by now
# at the latest, a settled state (in sync, failed) becomes pending with its attempts reset.
_PG_WRITE = """
WITH companies AS (
  UPDATE company AS c SET name = u.name, identifier = u.identifier, license_count = u.license_count,
    last_sequence = u.last_sequence, deleted_at = u.deleted_at, updated_at = $7
  FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::int[], $5::bigint[], $6::timestamptz[])
    AS u(id, name, identifier, license_count, last_sequence, deleted_at)
  WHERE c.id = u.id
), ledger AS (
  INSERT INTO license_change (tenant_id, company_id, webhook_id, sequence, license_count, previous_count,
    effective_at, received_at, ignored_reason)
  SELECT * FROM unnest($8::varchar[], $9::varchar[], $10::varchar[], $11::bigint[], $12::int[], $13::int[],
    $14::timestamptz[], $15::timestamptz[], $16::varchar[])
), due AS (
  INSERT INTO sync_state AS s (company_id, tenant_id, status, reason, due_at, generation, attempts)
  SELECT u.company_id, u.tenant_id, 'pending', $19, $7, u.changes, 0
  FROM unnest($17::varchar[], $18::varchar[], $20::int[]) AS u(company_id, tenant_id, changes)
  ON CONFLICT (company_id) DO UPDATE SET
    generation = s.generation + excluded.generation,
    reason = excluded.reason,
    due_at = CASE WHEN s.due_at IS NULL OR s.due_at > excluded.due_at THEN excluded.due_at ELSE s.due_at END,
    status = CASE WHEN s.status IN ('in_sync', 'failed') THEN 'pending' ELSE s.status END,
    attempts = CASE WHEN s.status IN ('in_sync', 'failed') THEN 0 ELSE s.attempts END
), outcomes AS (
  UPDATE webhook_inbox AS i SET outcome = u.outcome
  FROM unnest($21::varchar[], $22::varchar[], $23::varchar[]) AS u(tenant_id, webhook_id, outcome)
  WHERE i.tenant_id = u.tenant_id AND i.webhook_id = u.webhook_id
)
SELECT 1"""


class AsyncpgIntakeStore:
    """PostgreSQL only; `conn` must be inside a transaction the caller owns."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def tenants(self, ids: Sequence[str]) -> dict[str, TenantRow]:
        return {r["id"]: TenantRow(*r) for r in await self.conn.fetch(_PG_TENANTS, sorted(ids))}

    async def record_inbox(self, rows: Sequence[InboxRow]) -> set[tuple[str, str]]:
        rows = _ordered(rows, "tenant_id", "webhook_id")
        columns = _columns(rows, "tenant_id", "webhook_id", "event_type", "received_at", "outcome")
        inserted = await self.conn.fetch(_PG_INBOX, *columns, [json.dumps(r.payload) for r in rows])
        return {(r["tenant_id"], r["webhook_id"]) for r in inserted}

    async def lock_companies(self, tenant_id: str, external_ids: Sequence[str]) -> list[CompanyState]:
        return [CompanyState(*r) for r in await self.conn.fetch(_PG_COMPANIES, tenant_id, sorted(external_ids))]

    async def create_companies(self, rows: Sequence[NewCompany], now: datetime) -> None:
        rows = _ordered(rows, "tenant_id", "external_id")
        columns = _columns(rows, "id", "tenant_id", "external_id", "name")
        inserted = await self.conn.fetch(_PG_NEW_COMPANIES, *columns, now)
        if inserted:
            await self.conn.execute(_PG_NEW_SYNC_STATES, *_columns([tuple(r) for r in inserted], 0, 1))

    async def write(self, changes: Changes) -> None:
        companies = _ordered(changes.companies, "id")
        due = _ordered(changes.due, "company_id")
        await self.conn.execute(
            _PG_WRITE,
            *_columns(companies, "id", "name", "identifier", "license_count", "last_sequence", "deleted_at"),
            changes.now,
            *_columns(changes.ledger, *LEDGER_COLUMNS),
            *_columns(due, "company_id", "tenant_id"),
            changes.reason,
            *_columns(due, "changes"),
            *_columns(changes.outcomes, 0, 1, 2),
        )


def _columns(rows: Sequence[Any], *fields: str | int) -> list[list[Any]]:
    """Rows turned into one list per field (attribute name, or index for tuples): the arrays `unnest` takes."""
    return [[r[f] if isinstance(f, int) else getattr(r, f) for r in rows] for f in fields]
