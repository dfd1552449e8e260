"""Many mapped companies at once, for the sync engine's load and fault tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from pydantic import SecretStr

from app.api.schemas.webhooks import LicenseCountChanged, LicenseCountChangedData
from app.connectwise.sandbox.app import Sandbox
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.context import AppContext
from app.db.models import BillingProduct, Company, CwConnection, SyncState, Tenant
from app.services.cw_connections import CLIENT_ID_PURPOSE, PRIVATE_KEY_PURPOSE
from app.services.tenants import create_tenant
from app.services.webhook_intake import accept_event


@dataclass
class Fleet:
    tenant_id: str
    companies: dict[str, int]  # portal company id → CW agreement id


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.now.timestamp()


async def fleet(
    ctx: AppContext, sandbox: Sandbox, *, companies: int, name: str = "Fleet MSP", sync_mode: str = "auto"
) -> Fleet:
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
                unit_price=Decimal("3.00"),
                unit_cost=Decimal("1.25"),
            )
        )
        mapping: dict[str, int] = {}
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
                    "agreementStatus": "Active",
                    "billingCycle": {"id": 1, "name": "Monthly"},
                    "billStartDate": "2026-01-01T00:00:00Z",
                    "noEndingDateFlag": True,
                }
            )
            external = f"c-{i}"
            company = Company(
                tenant_id=tenant.id,
                external_id=external,
                name=f"Co {i}",
                billing_enabled=True,
                cw_company_id=cw_company["id"],
                cw_agreement_id=agreement["id"],
                agreement_name="Managed Services",
                billing_cycle="Monthly",
                bill_start_date=date(2026, 1, 1),
                agreement_prorate=False,
            )
            s.add(company)
            await s.flush()
            s.add(SyncState(company_id=company.id, tenant_id=tenant.id, status="in_sync", generation=0))
            mapping[external] = agreement["id"]
    return Fleet(tenant_id=created.tenant_id, companies=mapping)


async def change(
    ctx: AppContext,
    tenant_id: str,
    company_id: str,
    count: int,
    *,
    sequence: int,
    effective_at: datetime,
    webhook_id: str | None = None,
) -> str:
    event = LicenseCountChanged(
        type="license.count_changed",
        data=LicenseCountChangedData(
            company_id=company_id, license_count=count, sequence=sequence, effective_at=effective_at
        ),
    )
    async with ctx.sessionmaker() as s, s.begin():
        tenant = await s.get(Tenant, tenant_id)
        assert tenant is not None
        result = await accept_event(
            s,
            tenant=tenant,
            webhook_id=webhook_id or f"{company_id}-{sequence}",
            event=event,
            payload=event.model_dump(mode="json"),
        )
    return result.outcome


def day(d: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, d, hour, tzinfo=UTC)
