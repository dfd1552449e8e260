"""Building large tenants quickly for benchmarks: bulk rows in the database and matching records in the sandbox."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import insert, text

from app.connectwise.sandbox.app import Sandbox
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.context import AppContext
from app.db.base import new_id
from app.db.migrate import upgrade_to_head
from app.db.models import (
    AgreementTerm,
    BillingProduct,
    BillingStatusChange,
    Company,
    CwConnection,
    LicenseChange,
    PriceSetting,
    SyncState,
    Tenant,
    TrackedAddition,
)
from app.domain.markers import Kind, Marker, company_key
from app.main import create_app
from app.security.encryption import generate_key
from app.services.cw_connections import CLIENT_ID_PURPOSE, PRIVATE_KEY_PURPOSE
from app.services.tenants import NewTenant, create_tenant
from app.settings import Environment, Settings, load_settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BILLED_FROM = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)  # every bench company is billed from 1 November
# Inherited by the bench's own worker processes (bench/worker_process.py), which must read what this one encrypted.
SIGNING_KEY = os.environ.setdefault("BENCH_SIGNING_KEY", "bench-signing-key-" + os.urandom(16).hex())
ENCRYPTION_KEY = os.environ.setdefault("BENCH_ENCRYPTION_KEY", generate_key())


def bench_settings(database_url: str, **overrides: object) -> Settings:
    return load_settings(
        app_env=Environment.production,
        database_url=database_url,
        jwt_signing_key=SecretStr(SIGNING_KEY),
        encryption_keys=[SecretStr(ENCRYPTION_KEY)],
        run_worker=False,
        log_level="WARNING",
        **overrides,
    )


def sqlite_url() -> str:
    return f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='cwbs-bench-')}/bench.db"


async def fresh_database(url: str) -> None:
    """An empty, migrated database (PostgreSQL: dropped and re-created)."""
    if url.startswith("postgresql"):
        from sqlalchemy.engine import make_url
        from sqlalchemy.ext.asyncio import create_async_engine

        parsed = make_url(url)
        admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        await admin.dispose()
    from app.db.session import create_engine

    engine = create_engine(url)
    await upgrade_to_head(engine)
    await engine.dispose()


@dataclass(frozen=True)
class Seed:
    """One bench company as ConnectWise holds it: its agreement, and (in sync) its base line."""

    agreement_id: int
    company_pk: str
    count: int
    in_sync: bool


@dataclass
class BigTenant:
    tenant: NewTenant
    companies: int
    seeds: list[Seed]


def seed_sandbox(sandbox: Sandbox, seeds: list[Seed]) -> list[int]:
    """Each seed's agreement (and base line when in sync) in the sandbox; the base lines' addition ids. The same seeds
    in the same order give the same ids in a fresh sandbox (bench/sandbox_server.py replays them)."""
    ids = []
    for seed in seeds:
        sandbox.store.agreements.rows[seed.agreement_id] = {
            "id": seed.agreement_id,
            "name": "Managed Services",
            "company": {"id": 1},
            "contact": {"id": 1},
            "cancelledFlag": False,
            "billingCycle": {"id": 1, "name": "Monthly"},
            "startDate": "2026-11-01T00:00:00Z",
            "billStartDate": "2026-11-01T00:00:00Z",
            "noEndingDateFlag": True,
            "type": {"id": 1},
            "_info": {"lastUpdated": "2026-01-01T00:00:00Z"},
        }
        if seed.in_sync:
            addition = sandbox.store.create_addition(
                seed.agreement_id,
                {
                    "product": {"id": 1},
                    "billCustomer": "Billable",
                    "quantity": seed.count,
                    "unitPrice": 3.0,
                    "unitCost": 1.25,
                    "lessIncluded": 0,
                    "effectiveDate": "2026-11-01T00:00:00Z",
                    "serialNumber": str(Marker(company_key(seed.company_pk), Kind.base, date(2026, 11, 1))),
                    "invoiceDescription": "Vendor EDR",
                },
            )
            ids.append(int(addition["id"]))
    return ids


async def big_tenant(
    ctx: AppContext,
    sandbox: Sandbox | None,
    *,
    companies: int,
    in_sync: bool,
    ledger_rows_per_company: int = 1,
    site_url: str = IN_PROCESS_SITE,
) -> BigTenant:
    """A tenant with `companies` mapped companies. `in_sync`: CW already holds each base line (steady state)."""
    async with ctx.sessionmaker() as s, s.begin():
        tenant = await create_tenant(s, box=ctx.secrets, name=f"Bench {companies}")
        row = await s.get(Tenant, tenant.tenant_id)
        assert row is not None
        row.billing_enabled = True
        s.add(
            CwConnection(
                tenant_id=row.id,
                site_url=site_url,
                login_company_id="sandbox",
                public_key="sandbox-public",
                private_key_encrypted=ctx.secrets.encrypt(
                    "sandbox-private", tenant_id=row.id, purpose=PRIVATE_KEY_PURPOSE
                ),
                client_id_encrypted=ctx.secrets.encrypt("bench", tenant_id=row.id, purpose=CLIENT_ID_PURPOSE),
            )
        )
        s.add(
            BillingProduct(
                tenant_id=row.id,
                cw_catalog_item_id=1,
                identifier="VEND-EDR",
                description="Vendor EDR",
                unit_price=Decimal("3.00"),
                unit_cost=Decimal("1.25"),
            )
        )
        s.add(PriceSetting(tenant_id=row.id, set_at=BILLED_FROM, unit_price=Decimal("3.00"), unit_cost=Decimal("1.25")))
    company_rows, state_rows, ledger_rows, tracked_rows, term_rows, status_rows = [], [], [], [], [], []
    seeds: list[Seed] = []
    for i in range(companies):
        agreement_id = i + 1000
        pk = new_id()
        count = 5 + i % 20
        company_rows.append(
            {
                "id": pk,
                "tenant_id": tenant.tenant_id,
                "external_id": f"c-{i}",
                "name": f"Company {i}",
                "license_count": count,
                "billing_enabled": True,
                "billing_active": True,
                "cw_company_id": 1,
                "cw_agreement_id": agreement_id,
                "agreement_name": "Managed Services",
                "billing_cycle": "Monthly",
                "bill_start_date": date(2026, 11, 1),
                "agreement_prorate": False,
                "agreement_status": "Active",
                "agreement_checked_at": NOW,
                "mapped_at": BILLED_FROM,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        term_rows.append(
            {
                "tenant_id": tenant.tenant_id,
                "company_id": pk,
                "from_day": date(2026, 11, 1),
                "cw_agreement_id": agreement_id,
                "billing_cycle": "Monthly",
                "bill_start_date": date(2026, 11, 1),
                "created_at": BILLED_FROM,
            }
        )
        status_rows.append(
            {
                "tenant_id": tenant.tenant_id,
                "company_id": pk,
                "changed_at": BILLED_FROM,
                "active": True,
                "reason": "bench",
            }
        )
        state_rows.append(
            {"company_id": pk, "tenant_id": tenant.tenant_id, "status": "in_sync", "generation": 0, "attempts": 0}
        )
        for seq in range(1, ledger_rows_per_company + 1):
            ledger_rows.append(
                {
                    "tenant_id": tenant.tenant_id,
                    "company_id": pk,
                    "sequence": seq,
                    "license_count": count,
                    "previous_count": 0,
                    "received_at": NOW,
                    "effective_at": datetime(2026, 10, 1, 9, tzinfo=UTC),
                    "webhook_id": f"seed-{i}-{seq}",
                    "status": "accepted",
                    "source": "portal",
                }
            )
        seeds.append(Seed(agreement_id=agreement_id, company_pk=pk, count=count, in_sync=in_sync))
        if in_sync and sandbox is not None:  # November's base line, written before November began
            marker = str(Marker(company_key(pk), Kind.base, date(2026, 11, 1)))
            addition_id = seed_sandbox(sandbox, [seeds[-1]])[0]
            tracked_rows.append(
                {
                    "tenant_id": tenant.tenant_id,
                    "company_id": pk,
                    "cw_agreement_id": agreement_id,
                    "kind": Kind.base.value,
                    "marker": marker,
                    "cw_addition_id": addition_id,
                    "adopted": False,
                    "create_pending": False,
                    "last_written": {
                        "quantity": str(count),
                        "unit_price": "3.00",
                        "unit_cost": "1.25",
                        "less_included": "0",
                        "effective": "2026-11-01",
                        "cancelled": None,
                        "description": "Vendor EDR",
                    },
                }
            )
        elif sandbox is not None:
            seed_sandbox(sandbox, [seeds[-1]])
    async with ctx.engine.begin() as conn:
        for model, rows in (
            (Company, company_rows),
            (AgreementTerm, term_rows),
            (BillingStatusChange, status_rows),
            (SyncState, state_rows),
            (LicenseChange, ledger_rows),
            (TrackedAddition, tracked_rows),
        ):
            for start in range(0, len(rows), 5000):
                if rows[start : start + 5000]:
                    await conn.execute(insert(model), rows[start : start + 5000])
    await analyze(ctx)
    return BigTenant(tenant=tenant, companies=companies, seeds=seeds)


async def analyze(ctx: AppContext) -> None:
    """Planner statistics for the rows just bulk-loaded, as autovacuum would gather them within a minute or so on a
    live database (and as PostgreSQL's docs advise after a bulk load): without them PostgreSQL plans every query for
    empty tables — a look-up of a few companies by portal id then scans the whole tenant."""
    async with ctx.engine.connect() as conn:
        if ctx.engine.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
        await conn.commit()


async def database_size(ctx: AppContext) -> int:
    async with ctx.engine.connect() as conn:
        if ctx.engine.dialect.name == "postgresql":
            return int((await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one())
        pages = (await conn.execute(text("PRAGMA page_count"))).scalar_one()
        size = (await conn.execute(text("PRAGMA page_size"))).scalar_one()
        return int(pages) * int(size)


def app_for(settings: Settings, sandbox: Sandbox | None = None) -> FastAPI:
    return create_app(settings, sandbox=sandbox)


async def store_and_apply(ctx: AppContext, tenant_id: str, payload: dict[str, object], *, webhook_id: str) -> None:
    """One delivery stored in the inbox (as the webhook route stores it) and applied (as the worker does)."""
    import json

    from app.db.inbox import Entry, store_on_core
    from app.services.applier import apply_pending

    async with ctx.sessionmaker() as s:
        tenant = await s.get(Tenant, tenant_id)
        assert tenant is not None
        version = tenant.secrets_version
    entry = Entry(tenant_id, webhook_id, str(payload["type"]), ctx.now(), json.dumps(payload), payload, version)
    async with ctx.engine.connect() as conn:
        await store_on_core(conn, [entry])
    async with ctx.sessionmaker() as s, s.begin():
        await apply_pending(s, now=ctx.now())
