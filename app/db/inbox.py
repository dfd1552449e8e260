"""Storing verified webhook deliveries in the inbox: the only write of the webhook request.

A batch of deliveries (see `app/services/intake_queue.py`) is stored in one transaction: each is inserted unless its
(tenant, webhook-id) is already there — then it is a duplicate and changes nothing — and only while its tenant's
`secrets_version` is still the one its signature was checked against (a rotation without grace must lock the old
secret out at once; the tenant row is share-locked until the batch commits, so a rotation waits for it). Applying
deliveries to the license history is the applier's work (`app/services/applier.py`), never the request's.

On PostgreSQL a batch is one statement on the intake's own asyncpg connection (one round trip, committed by itself);
SQLite stores it with the same rule through SQLAlchemy Core.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy import Insert, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.base import table_of
from app.db.models import DeliveryStatus, Tenant, WebhookInbox
from app.db.upsert import upsert_insert

_INBOX = table_of(WebhookInbox)
_TENANT = table_of(Tenant)


class Stored(StrEnum):
    stored = "stored"
    duplicate = "duplicate"  # this (tenant, webhook-id) was already there: no second effect
    recheck = "recheck"  # the tenant's secrets rotated since the signature was checked: nothing stored
    unknown_tenant = "unknown_tenant"


@dataclass(frozen=True, slots=True)
class Entry:
    """One verified delivery: its JSON text as received and parsed, and the secrets version it was checked with."""

    tenant_id: str
    webhook_id: str
    event_type: str
    received_at: datetime
    text: str
    payload: dict[str, Any]
    secrets_version: int


def _first_of_each(entries: Sequence[Entry]) -> list[int]:
    """Indexes of the first delivery of each (tenant, webhook-id) in the batch; the others are duplicates."""
    seen: set[tuple[str, str]] = set()
    first: list[int] = []
    for index, entry in enumerate(entries):
        key = (entry.tenant_id, entry.webhook_id)
        if key not in seen:
            seen.add(key)
            first.append(index)
    return first


_STORE_ON_POSTGRES = """
WITH d AS (
    SELECT * FROM unnest($1::int[], $2::varchar[], $3::varchar[], $4::int[], $5::varchar[], $6::timestamptz[],
                         $7::text[])
        AS d(i, tenant_id, webhook_id, version, event_type, received_at, payload)
), t AS (
    SELECT id, secrets_version FROM tenant WHERE id = ANY($2::varchar[]) ORDER BY id FOR SHARE
), ok AS (
    SELECT d.* FROM d JOIN t ON t.id = d.tenant_id AND t.secrets_version = d.version
), ins AS (
    INSERT INTO webhook_inbox (tenant_id, webhook_id, event_type, received_at, status, payload)
    SELECT tenant_id, webhook_id, event_type, received_at, 'pending', payload::json FROM ok
    ORDER BY tenant_id, webhook_id
    ON CONFLICT (tenant_id, webhook_id) DO NOTHING
    RETURNING tenant_id, webhook_id
)
SELECT d.i, t.id IS NOT NULL, ok.i IS NOT NULL, ins.webhook_id IS NOT NULL
FROM d
LEFT JOIN t ON t.id = d.tenant_id
LEFT JOIN ok ON ok.i = d.i
LEFT JOIN ins ON ins.tenant_id = d.tenant_id AND ins.webhook_id = d.webhook_id
"""


async def store_on_postgres(conn: asyncpg.Connection, entries: Sequence[Entry]) -> list[Stored]:
    """Store the batch in one statement (its own transaction). One result per entry."""
    results = [Stored.duplicate] * len(entries)
    first = _first_of_each(entries)
    picked = [entries[i] for i in first]
    rows = await conn.fetch(
        _STORE_ON_POSTGRES,
        first,
        [e.tenant_id for e in picked],
        [e.webhook_id for e in picked],
        [e.secrets_version for e in picked],
        [e.event_type for e in picked],
        [e.received_at for e in picked],
        [e.text for e in picked],
    )
    for index, tenant_known, version_ok, inserted in rows:
        results[index] = (
            Stored.unknown_tenant
            if not tenant_known
            else Stored.recheck
            if not version_ok
            else Stored.stored
            if inserted
            else Stored.duplicate
        )
    return results


@functools.cache
def _insert_statement(dialect: str) -> Insert:
    return (
        upsert_insert(dialect)(_INBOX)
        .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id"])
        .returning(_INBOX.c.tenant_id, _INBOX.c.webhook_id)
    )


_VERSIONS = select(_TENANT.c.id, _TENANT.c.secrets_version).where(_TENANT.c.id.in_(bindparam("ids", expanding=True)))


async def store_on_core(conn: AsyncConnection, entries: Sequence[Entry]) -> list[Stored]:
    """The same rule through SQLAlchemy Core, in one transaction (SQLite; PostgreSQL in tests)."""
    results = [Stored.duplicate] * len(entries)
    first = _first_of_each(entries)
    async with conn.begin():
        versions = dict((await conn.execute(_VERSIONS, {"ids": sorted({entries[i].tenant_id for i in first})})).all())
        wanted: list[int] = []
        for index in first:
            entry = entries[index]
            if entry.tenant_id not in versions:
                results[index] = Stored.unknown_tenant
            elif versions[entry.tenant_id] != entry.secrets_version:
                results[index] = Stored.recheck
            else:
                wanted.append(index)
        if wanted:
            params = [
                {
                    "tenant_id": entries[i].tenant_id,
                    "webhook_id": entries[i].webhook_id,
                    "event_type": entries[i].event_type,
                    "received_at": entries[i].received_at,
                    "status": DeliveryStatus.pending.value,
                    "payload": entries[i].payload,
                }
                for i in sorted(wanted, key=lambda i: (entries[i].tenant_id, entries[i].webhook_id))
            ]
            inserted = {tuple(row) for row in await conn.execute(_insert_statement(conn.dialect.name), params)}
            for index in wanted:
                entry = entries[index]
                stored = (entry.tenant_id, entry.webhook_id) in inserted
                results[index] = Stored.stored if stored else Stored.duplicate
    return results
