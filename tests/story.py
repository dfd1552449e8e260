"""A tenant's whole story driven through the service as its users drive it — the REST API, signed webhooks through
the HTTP route, the worker — against the in-process sandbox, with one virtual clock for both. The MSP's side (its
agreements, its invoicing runs) is done in the sandbox directly, as an MSP does it in ConnectWise."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.db.models import Company, SyncState
from app.domain.markers import company_key, parse
from app.services.tenants import NewTenant, create_tenant
from app.sync.worker import Worker
from tests.api.setup_helpers import CONNECTION
from tests.webhook_helpers import signed_headers

MONTHLY = {"id": 1, "name": "Monthly"}


@dataclass
class World:
    app: FastAPI
    http: httpx.AsyncClient
    tenant: NewTenant | None = None
    headers: dict[str, str] = field(default_factory=dict)
    crash: Callable[[str], Awaitable[None]] | None = None
    worker_id: str = "sim-worker"
    _worker: Worker | None = None

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    @property
    def sandbox(self) -> Sandbox:
        sandbox: Sandbox = self.app.state.sandbox
        return sandbox

    @property
    def worker(self) -> Worker:
        if self._worker is None:

            async def crash(step: str) -> None:
                if self.crash is not None:
                    await self.crash(step)

            self._worker = Worker(
                self.ctx, worker_id=self.worker_id, full_reconcile_every=timedelta(hours=6), crash=crash
            )
        return self._worker

    # ------------------------------------------------------------------ time
    def at(self, day: date, hour: int = 9) -> None:
        self.ctx.clock.freeze(datetime.combine(day, time(hour), tzinfo=UTC))

    @property
    def today(self) -> date:
        return self.ctx.now().date()

    # ------------------------------------------------------------------ the API
    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, headers=self.headers, **kwargs)
        assert response.status_code < 300, f"{method} {path} → {response.status_code}: {response.text}"
        return response.json() if response.content else None

    async def setup(self, *, price: str = "3.00", cost: str = "1.00", **settings: Any) -> None:
        async with self.ctx.sessionmaker() as session, session.begin():
            self.tenant = await create_tenant(session, box=self.ctx.secrets, name="Sim MSP")
        token = await self.http.post(
            "/api/v1/auth/token",
            data={"client_id": self.tenant.client_id, "client_secret": self.tenant.client_secret},
        )
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        await self.call("PUT", "/api/v1/connectwise/connection", json=CONNECTION)
        await self.call("PATCH", "/api/v1/billing/settings", json={"enabled": True, "timezone": "UTC", **settings})
        items = await self.call("GET", "/api/v1/connectwise/catalog", params={"search": "VEND-EDR"})
        await self.call(
            "PUT",
            "/api/v1/billing/product",
            json={"cw_catalog_item_id": items[0]["id"], "unit_price": price, "unit_cost": cost},
        )

    async def deliver(self, payload: dict[str, Any], *, webhook_id: str | None = None) -> httpx.Response:
        """A signed delivery through the HTTP route (stored, not applied: the worker applies it)."""
        assert self.tenant is not None
        body = json.dumps(payload)
        response = await self.http.post(
            f"/webhooks/portal/{self.tenant.tenant_id}",
            content=body,
            headers=signed_headers(self.tenant.webhook_secret, body, webhook_id=webhook_id),
        )
        assert response.status_code in (200, 202), response.text
        return response

    async def licenses(
        self, company: str, count: int, *, sequence: int, effective: date, webhook_id: str | None = None
    ) -> httpx.Response:
        return await self.deliver(
            {
                "type": "license.count_changed",
                "data": {
                    "company_id": company,
                    "license_count": count,
                    "sequence": sequence,
                    "effective_at": f"{effective.isoformat()}T12:00:00Z",
                },
            },
            webhook_id=webhook_id,
        )

    # ------------------------------------------------------------------ ConnectWise, as the MSP keeps it
    def agreement(self, cw_company: int, *, start: date, prorate: bool = False, name: str = "Managed Services") -> int:
        record = self.sandbox.store.agreements.insert(
            {
                "name": name,
                "type": {"id": 1, "name": "Managed Services"},
                "company": {"id": cw_company},
                "contact": {"id": cw_company},
                "startDate": f"{start.isoformat()}T00:00:00Z",
                "billStartDate": f"{start.isoformat()}T00:00:00Z",
                "noEndingDateFlag": True,
                "cancelledFlag": False,
                "billingCycle": MONTHLY,
                "prorateFlag": prorate,
                "invoicingCycle": "ContractYear",
            }
        )
        return int(record["id"])

    def cancel_agreement(self, agreement_id: int) -> None:
        record = self.sandbox.store.agreements.get(agreement_id)
        record["cancelledFlag"] = True
        record["dateCancelled"] = self.ctx.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def invoice_due(self, agreement_id: int) -> list[int]:
        """Run agreement invoicing for every period due by today (what the MSP does in CW)."""
        created: list[int] = []
        while True:
            agreement = self.sandbox.store.agreements.get(agreement_id)
            due = self.sandbox.invoicing.open_periods(agreement, through=self.sandbox.store.today(), limit=1)
            if not due:
                return created
            created.append(self.sandbox.invoicing.invoice(agreement_id))

    def invoiced_for(self, company_pk: str, *, adopted: set[int] = frozenset()) -> Decimal:  # type: ignore[assignment]
        """Σ of every invoice line billing one of the company's lines (its markers, and lines it adopted)."""
        key = company_key(company_pk)
        total = Decimal(0)
        for record in self.sandbox.invoicing.records.values():
            for line in record.lines:
                marker = parse(line.serial_number)
                if (marker is not None and marker.key == key) or line.addition_id in adopted:
                    total += line.amount
        return total

    # ------------------------------------------------------------------ the worker
    async def work(self, *, max_minutes: int = 240) -> None:
        """Let the worker run until nothing is due, time moving on past retries (at most `max_minutes`)."""
        start = self.ctx.now()
        for _ in range(2000):
            handled = await self.worker.run_once()
            if handled:
                continue
            async with self.ctx.sessionmaker() as session:
                waiting = [
                    d
                    for d in await session.scalars(select(SyncState.due_at).where(SyncState.due_at.is_not(None)))
                    if d is not None
                ]
            now = self.ctx.now()
            soon = [d for d in waiting if d <= start + timedelta(minutes=max_minutes)]
            if not soon:
                return
            self.ctx.clock.freeze(max(now, min(soon)) + timedelta(seconds=1))
        raise AssertionError("the worker never got quiet")


# ---------------------------------------------------------------------- helpers for stories told in tests
def d(text: str) -> Decimal:
    return Decimal(text)


async def company_pk(world: World, company: str = "c-42") -> str:
    """The service's id of a portal company (its lines' markers carry it)."""
    async with world.ctx.sessionmaker() as session:
        pk = await session.scalar(select(Company.id).where(Company.external_id == company))
    assert pk is not None
    return pk


def ours(world: World, invoice_id: int, pk: str) -> list[tuple[str, Decimal]]:
    """The invoice's lines written for the company: (kind, amount), sorted."""
    key = company_key(pk)
    found = []
    for line in world.sandbox.invoicing.lines(invoice_id):
        marker = parse(line.serial_number)
        if marker is not None and marker.key == key:
            found.append((str(marker.kind), line.amount))
    return sorted(found)


async def billed_since_october(world: World, *, licenses: int = 1, settings: dict[str, str] | None = None) -> int:
    """Contoso (c-42), billed on its own agreement since 1 October with `licenses` licenses (since 1 September) at
    3.00; the agreement's id. September and October are invoiced."""
    world.at(date(2026, 9, 1))
    agreement = world.agreement(1, start=date(2026, 9, 1), prorate=bool(settings and settings.get("prorate")))
    await world.setup(**{k: v for k, v in (settings or {}).items() if k != "prorate"})
    await world.deliver({"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso"}})
    await world.licenses("c-42", licenses, sequence=1, effective=date(2026, 9, 1))
    await world.work()
    world.at(date(2026, 9, 30))
    world.invoice_due(agreement)  # September: before this company is billed
    await world.call("PUT", "/api/v1/companies/c-42/mapping", json={"cw_company_id": 1, "cw_agreement_id": agreement})
    await world.call("PATCH", "/api/v1/companies/c-42/billing", json={"enabled": True})
    await world.work()
    world.at(date(2026, 10, 2))
    world.invoice_due(agreement)  # October: licenses × 3.00 (and 30 Sep as a new customer, billed with November)
    return agreement
