"""Many mapped companies at once, for the sync engine's load and fault tests; changes fed through the inbox and the
applier as the webhook route would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from pydantic import SecretStr

from app.connectwise.sandbox.app import Sandbox
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.context import AppContext
from app.db.inbox import Entry, Stored, store_on_core
from app.db.models import (
    AgreementTerm,
    BillingProduct,
    BillingStatusChange,
    Company,
    CwConnection,
    PriceSetting,
    SyncState,
    Tenant,
)
from app.services.applier import apply_pending
from app.services.cw_connections import CLIENT_ID_PURPOSE, PRIVATE_KEY_PURPOSE
from app.services.tenants import create_tenant

START = date(2026, 11, 1)  # billing starts with November; the clock of these tests stands in November
PRICE, COST = Decimal("3.00"), Decimal("1.25")


@dataclass
class Fleet:
    tenant_id: str
    companies: dict[str, int]  # portal company id → CW agreement id
    company_pks: dict[str, str]  # portal company id → the service's id


async def fleet(
    ctx: AppContext, sandbox: Sandbox, *, companies: int, name: str = "Fleet MSP", sync_mode: str = "auto"
) -> Fleet:
    """A tenant with `companies` companies, each mapped to an agreement of its own and billed from 1 November."""
    billed_from = datetime(START.year, START.month, START.day, tzinfo=UTC) - timedelta(hours=12)
    async with ctx.sessionmaker() as s, s.begin():
        created = await create_tenant(s, box=ctx.secrets, name=name)
        tenant = await s.get(Tenant, created.tenant_id)
        assert tenant is not None
        tenant.billing_enabled = True
        tenant.sync_mode = sync_mode
        s.add(
            CwConnection(
                tenant_id=tenant.id,
                site_url=IN_PROCESS_SITE,
                login_company_id="sandbox",
                public_key="sandbox-public",
                private_key_encrypted=ctx.secrets.encrypt(
                    "sandbox-private", tenant_id=tenant.id, purpose=PRIVATE_KEY_PURPOSE
                ),
                client_id_encrypted=ctx.secrets.encrypt(
                    SecretStr("c").get_secret_value(), tenant_id=tenant.id, purpose=CLIENT_ID_PURPOSE
                ),
            )
        )
        s.add(
            BillingProduct(
                tenant_id=tenant.id,
                cw_catalog_item_id=1,
                identifier="VEND-EDR",
                description="Vendor EDR license",
                unit_price=PRICE,
                unit_cost=COST,
            )
        )
        s.add(PriceSetting(tenant_id=tenant.id, set_at=billed_from, unit_price=PRICE, unit_cost=COST))
        mapping: dict[str, int] = {}
        pks: dict[str, str] = {}
        for i in range(companies):
            cw_company = sandbox.store.companies.insert(
                {"identifier": f"{name[:4]}{i:05}", "name": f"Co {i}", "deletedFlag": False}
            )
            agreement = sandbox.store.agreements.insert(
                {
                    "name": "Managed Services",
                    "type": {"id": 1, "name": "Managed Services"},
                    "company": {"id": cw_company["id"]},
                    "contact": {"id": 1},
                    "cancelledFlag": False,
                    "billingCycle": {"id": 1, "name": "Monthly"},
                    "startDate": f"{START.isoformat()}T00:00:00Z",
                    "billStartDate": f"{START.isoformat()}T00:00:00Z",
                    "noEndingDateFlag": True,
                }
            )
            external = f"c-{i}"
            company = Company(
                tenant_id=tenant.id,
                external_id=external,
                name=f"Co {i}",
                billing_enabled=True,
                billing_active=True,
                cw_company_id=cw_company["id"],
                cw_agreement_id=agreement["id"],
                agreement_name="Managed Services",
                billing_cycle="Monthly",
                bill_start_date=START,
                agreement_prorate=False,
                agreement_status="Active",
                agreement_checked_at=billed_from,
                mapped_at=billed_from,
            )
            s.add(company)
            await s.flush()
            s.add_all(
                [
                    AgreementTerm(
                        tenant_id=tenant.id,
                        company_id=company.id,
                        from_day=START,
                        cw_agreement_id=agreement["id"],
                        billing_cycle="Monthly",
                        bill_start_date=START,
                    ),
                    BillingStatusChange(
                        tenant_id=tenant.id, company_id=company.id, changed_at=billed_from, active=True, reason="test"
                    ),
                    SyncState(company_id=company.id, tenant_id=tenant.id, status="in_sync", generation=0),
                ]
            )
            mapping[external] = agreement["id"]
            pks[external] = company.id
    return Fleet(tenant_id=created.tenant_id, companies=mapping, company_pks=pks)


async def change(
    ctx: AppContext,
    tenant_id: str,
    company_id: str,
    count: int,
    *,
    sequence: int,
    effective_at: datetime,
    webhook_id: str | None = None,
) -> Stored:
    """A license change stored in the inbox (as the webhook route stores it) and applied (as the worker does)."""
    payload = {
        "type": "license.count_changed",
        "data": {
            "company_id": company_id,
            "license_count": count,
            "sequence": sequence,
            "effective_at": effective_at.isoformat(),
        },
    }
    entry = Entry(
        tenant_id=tenant_id,
        webhook_id=webhook_id or f"{company_id}-{sequence}",
        event_type="license.count_changed",
        received_at=ctx.now(),
        text=json.dumps(payload),
        payload=payload,
        secrets_version=await _version(ctx, tenant_id),
    )
    async with ctx.engine.connect() as conn:
        (stored,) = await store_on_core(conn, [entry])
    async with ctx.sessionmaker() as s, s.begin():
        await apply_pending(s, now=ctx.now())
    return stored


async def _version(ctx: AppContext, tenant_id: str) -> int:
    async with ctx.sessionmaker() as s:
        tenant = await s.get(Tenant, tenant_id)
        assert tenant is not None
        return tenant.secrets_version


def day(d: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, d, hour, tzinfo=UTC)
