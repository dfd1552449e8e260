"""`cw-billing-sync demo`: the whole story against the sandbox, through the REST API, checked at the end.

Connect CW → enable billing → create the product with default cost and price → map two companies → override the
price for one ("Edit Billing") → preview and apply a license change 1 → 9 on day 16 → let the worker sync →
print each agreement. Exits non-zero if CW does not hold what it should.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

import httpx

from app.connectwise.sandbox.app import Sandbox
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.db.migrate import upgrade_to_head
from app.main import create_app
from app.security.webhooks import sign
from app.services.tenants import create_tenant
from app.settings import ConfigurationError, Environment, Settings
from app.sync.worker import Worker

DEMO_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a 30-day month, after the change on the 16th


@dataclass
class DemoResult:
    ok: bool
    problems: list[str]


async def run_demo(settings: Settings, *, out: TextIO = sys.stdout, sandbox_url: str | None = None) -> DemoResult:
    if settings.app_env is not Environment.dev:
        raise ConfigurationError(
            "the demo runs in dev mode only (APP_ENV=dev): it pins the clock and may use a loopback sandbox"
        )
    settings = settings.model_copy(
        update={
            "pin_now": settings.pin_now or DEMO_NOW,
            "run_worker": False,
            "log_level": "WARNING",
            "cw_allow_private_sites": bool(sandbox_url) or settings.cw_allow_private_sites,
        }
    )
    sandbox = None if sandbox_url else Sandbox()
    app = create_app(settings, sandbox=sandbox)
    ctx = app.state.ctx
    problems: list[str] = []

    def say(text: str) -> None:
        print(text, file=out)

    def check(condition: bool, problem: str) -> None:
        if not condition:
            problems.append(problem)
            say(f"  !! {problem}")

    await upgrade_to_head(ctx.engine)
    async with ctx.sessionmaker() as session, session.begin():
        tenant = await create_tenant(session, box=ctx.secrets, name="Demo MSP")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo") as api:

        async def call(method: str, path: str, **kwargs: Any) -> Any:
            response = await api.request(method, path, headers=headers, **kwargs)
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text}")
            return (
                response.json() if response.headers.get("content-type", "").startswith("application") else response.text
            )

        async def webhook(payload: dict[str, Any], webhook_id: str) -> None:
            body = json.dumps(payload).encode()
            stamp = int(datetime.now(UTC).timestamp())
            response = await api.post(
                f"/webhooks/portal/{tenant.tenant_id}",
                content=body,
                headers={
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(stamp),
                    "content-type": "application/json",
                    "webhook-signature": sign(
                        secret=tenant.webhook_secret, webhook_id=webhook_id, timestamp=stamp, body=body
                    ),
                },
            )
            if response.status_code not in (200, 202):
                raise RuntimeError(f"webhook {webhook_id} → {response.status_code}: {response.text}")

        token = (
            await api.post(
                "/api/v1/auth/token", data={"client_id": tenant.client_id, "client_secret": tenant.client_secret}
            )
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        say(f"Tenant 'Demo MSP' {tenant.tenant_id}; billing 'today' is {settings.pin_now:%Y-%m-%d}")

        say("1. Connect ConnectWise (the sandbox) and test the connection")
        await call(
            "PUT",
            "/api/v1/connectwise/connection",
            json={
                "site_url": sandbox_url or IN_PROCESS_SITE,
                "company_id": "sandbox",
                "public_key": "sandbox-public",
                "private_key": "sandbox-private",
                "client_id": "demo-client-id",
            },
        )
        tested = await call("POST", "/api/v1/connectwise/connection/test")
        say(f"   {'ok' if tested['ok'] else 'FAILED'}: " + ", ".join(c["name"] for c in tested["checks"] if c["ok"]))
        check(tested["ok"], "the connection test failed")

        say("2. Turn billing on")
        await call("PATCH", "/api/v1/billing/settings", json={"enabled": True, "timezone": "UTC"})

        say("3. Create the product in CW with default price 3.00 and cost 1.00")
        options = await call("GET", "/api/v1/connectwise/catalog/options")
        created = await api.post(
            "/api/v1/billing/product",
            headers=headers,
            json={
                "identifier": "VEND-EDR-PRO",
                "description": "Vendor EDR license",
                "customer_description": "Endpoint protection, per device per month",
                "subcategory_id": options["subcategories"][0]["id"],
                "type_id": options["types"][0]["id"],
                "unit_of_measure_id": options["units_of_measure"][0]["id"],
                "unit_price": "3.00",
                "unit_cost": "1.00",
            },
        )
        if created.status_code == 409:  # a standalone sandbox that ran the demo before: map the existing item
            product = await call(
                "PUT",
                "/api/v1/billing/product",
                json={
                    "cw_catalog_item_id": created.json()["cw_catalog_item_id"],
                    "unit_price": "3.00",
                    "unit_cost": "1.00",
                },
            )
        elif created.status_code == 201:
            product = created.json()
        else:
            raise RuntimeError(f"creating the product failed: {created.status_code} {created.text}")
        say(f"   {product['identifier']} (CW catalog item {product['cw_catalog_item_id']})")

        say("4. Map two companies to their CW companies and agreements, enable billing")
        mapped: dict[str, int] = {}
        for company_id, name, cw_identifier in (("c-42", "Contoso", "CONTOSO"), ("c-77", "Fabrikam", "FABRIKAM")):
            await webhook(
                {
                    "type": "company.upserted",
                    "data": {"company_id": company_id, "name": name, "identifier": cw_identifier},
                },
                f"up-{company_id}",
            )
            await webhook(
                {
                    "type": "license.count_changed",
                    "data": {
                        "company_id": company_id,
                        "license_count": 1,
                        "sequence": 1,
                        "effective_at": "2026-10-01T09:00:00Z",
                    },
                },
                f"lic-{company_id}-1",
            )
            suggestion = (await call("GET", f"/api/v1/companies/{company_id}/suggestions"))[0]
            agreement = (await call("GET", f"/api/v1/connectwise/companies/{suggestion['cw_company_id']}/agreements"))[
                0
            ]
            await call(
                "PUT",
                f"/api/v1/companies/{company_id}/mapping",
                json={"cw_company_id": suggestion["cw_company_id"], "cw_agreement_id": agreement["id"]},
            )
            await call("PATCH", f"/api/v1/companies/{company_id}/billing", json={"enabled": True})
            mapped[company_id] = agreement["id"]
            say(f"   {name} → CW '{suggestion['name']}' ({suggestion['reason']}), agreement '{agreement['name']}'")

        say("5. Edit Billing: Fabrikam pays 2.50 per license")
        fabrikam = await call("PATCH", "/api/v1/companies/c-77/billing", json={"unit_price": "2.50"})
        say(
            f"   Fabrikam: {fabrikam['pricing']['unit_price']} ({fabrikam['pricing']['price_source']}), "
            f"cost {fabrikam['pricing']['unit_cost']} ({fabrikam['pricing']['cost_source']})"
        )

        worker = Worker(ctx, full_reconcile_every=None, billing_now=ctx.now)
        await worker.drain()

        say("6. Preview the change 1 → 9 for Contoso on 16 Nov, then apply it (a signed webhook)")
        preview = await call(
            "POST",
            "/api/v1/companies/c-42/license-changes/preview",
            json={"license_count": 9, "effective_at": "2026-11-16T14:03:00Z"},
        )
        say(f"   {preview['message']}")
        await webhook(
            {
                "type": "license.count_changed",
                "data": {
                    "company_id": "c-42",
                    "company_name": "Contoso",
                    "license_count": 9,
                    "previous_count": 1,
                    "effective_at": "2026-11-16T14:03:00Z",
                    "sequence": 17,
                },
            },
            "lic-c-42-17",
        )

        say("7. The worker syncs")
        await worker.drain()
        status = await call("GET", "/api/v1/companies/c-42/sync")
        say(f"   Contoso: {status['status']}")

        say("")
        for company_id in mapped:
            say(await call("GET", f"/api/v1/companies/{company_id}/agreement", params={"format": "text"}))

        contoso = await call("GET", "/api/v1/companies/c-42/agreement")
        base = [line for line in contoso["lines"] if line["role"] == "base"]
        proration = [line for line in contoso["lines"] if line["role"] == "proration"]
        check(len(base) == 1 and base[0]["quantity"] == "9", "Contoso's base line should hold 9 licenses")
        check(len(base) == 1 and base[0]["unit_price"] == "3.00", "Contoso's base line should bill 3.00")
        check(
            len(proration) == 1 and proration[0]["unit_price"] == "12.00", "Contoso's proration line should bill 12.00"
        )
        check(
            bool(proration)
            and "+8 licenses × $3.00 × 15/30 days (16–30 Nov 2026)" in (proration[0]["invoice_description"] or ""),
            "the proration line should explain itself",
        )
        check(
            bool(proration) and Decimal(preview["proration_after"]["amount"]) == Decimal(proration[0]["unit_price"]),
            "the preview and the applied change should agree",
        )
        other = await call("GET", "/api/v1/companies/c-77/agreement")
        check(
            [(x["quantity"], x["unit_price"]) for x in other["lines"] if x["role"] == "base"] == [("1", "2.50")],
            "Fabrikam's base line should hold 1 license at its own 2.50",
        )
    await ctx.aclose()
    await ctx.engine.dispose()
    say(
        "Demo finished: CW holds what the ledger says." if not problems else f"Demo FAILED: {len(problems)} problem(s)."
    )
    return DemoResult(ok=not problems, problems=problems)
