"""`cw-billing-sync demo`: the whole story against the sandbox, through the REST API, across a month end and an
invoicing run, checked at the end.

3 Nov 2026: connect CW → enable billing → create the product (3.00, cost 1.00) → map two companies (1 license each)
→ Fabrikam pays 2.50 ("Edit Billing"). 16 Nov: preview and apply 1 → 9 licenses for Contoso. 2 Dec: the MSP runs
agreement invoicing; the invoice lines are printed. 5 Dec: a late delivery says Contoso went down to 5 on 25 Nov;
the service catches it up. 2 Jan: invoicing again, lines printed. Exits non-zero if CW does not bill what is owed.

The service and the sandbox share one clock (the in-process sandbox reads it; a standalone one started with
`--settable-clock` is moved with `POST /_sandbox/clock`).
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
from app.domain.markers import is_ours
from app.main import create_app
from app.security.webhooks import sign
from app.services.tenants import create_tenant
from app.settings import ConfigurationError, Environment, Settings
from app.sync.worker import Worker

DEMO_START = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


@dataclass
class DemoResult:
    ok: bool
    problems: list[str]


async def run_demo(settings: Settings, *, out: TextIO = sys.stdout, sandbox_url: str | None = None) -> DemoResult:
    if settings.app_env is not Environment.dev:
        raise ConfigurationError(
            "the demo runs in dev mode only (APP_ENV=dev): it moves the clock and may use a loopback sandbox"
        )
    settings = settings.model_copy(
        update={
            "pin_now": DEMO_START,
            "run_worker": False,
            "log_level": "WARNING",
            "cw_allow_private_sites": bool(sandbox_url) or settings.cw_allow_private_sites,
            "cw_sandbox": not sandbox_url,  # the in-process sandbox reads the service's clock
        }
    )
    app = create_app(settings)
    ctx = app.state.ctx
    ctx.clock.freeze(DEMO_START)
    problems: list[str] = []

    def say(text: str = "") -> None:
        print(text, file=out)

    def check(condition: bool, problem: str) -> None:
        if not condition:
            problems.append(problem)
            say(f"  !! {problem}")

    await upgrade_to_head(ctx.engine)
    async with ctx.sessionmaker() as session, session.begin():
        tenant = await create_tenant(session, box=ctx.secrets, name="Demo MSP", allow_same_name=True)  # run again
    cw_http = httpx.AsyncClient(base_url=sandbox_url) if sandbox_url else None
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
            stamp = int(datetime.now(UTC).timestamp())  # signatures carry the real time, whatever the demo's date
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

        async def move_clock(moment: datetime) -> None:
            ctx.clock.freeze(moment)
            if cw_http is not None:  # a standalone sandbox: it must agree on the date
                moved = await cw_http.post("/_sandbox/clock", json={"now": moment.isoformat()})
                if moved.status_code != 200:
                    raise RuntimeError("start the standalone sandbox with --settable-clock for the demo")
            say(f"\n— {moment:%d %b %Y} —")

        async def invoice(agreement_id: int) -> list[dict[str, Any]]:
            """Run agreement invoicing for every period due (the MSP, in CW); the lines of the newest invoice."""
            sandbox: Sandbox | None = app.state.sandbox
            client = sandbox.http_client() if sandbox else httpx.AsyncClient(base_url=sandbox_url or "")
            base = "" if sandbox_url else IN_PROCESS_SITE
            auth = {"Authorization": _basic(), "clientId": "demo"}
            lines: list[dict[str, Any]] = []
            async with client:
                while True:
                    made = await client.post(
                        f"{base}/v4_6_release/apis/3.0/finance/agreements/{agreement_id}/invoice", headers=auth
                    )
                    if made.status_code != 201:
                        return lines
                    lines = (await client.get(f"{base}/_sandbox/invoices/{made.json()}/lines")).json()

        token = (
            await api.post(
                "/api/v1/auth/token", data={"client_id": tenant.client_id, "client_secret": tenant.client_secret}
            )
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        say(f"Tenant 'Demo MSP' {tenant.tenant_id}")
        await move_clock(DEMO_START)

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

        say("4. Map two companies to their CW companies and agreements, enable billing (1 license each)")
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
            worker = Worker(ctx, full_reconcile_every=None)
            await worker.drain()  # the applier: the deliveries into the license history
            suggestion = (await call("GET", f"/api/v1/companies/{company_id}/suggestions"))[0]
            agreement = (await call("GET", f"/api/v1/connectwise/companies/{suggestion['cw_company_id']}/agreements"))[
                0
            ]
            # This agreement has been invoiced every month this year: its next invoice is November's.
            await invoice(agreement["id"])
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
        say(f"   Fabrikam: {fabrikam['pricing']['unit_price']} ({fabrikam['pricing']['price_source']})")
        await worker.drain()

        await move_clock(datetime(2026, 11, 16, 15, 0, tzinfo=UTC))
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
        await worker.drain()
        say(f"   Contoso: {(await call('GET', '/api/v1/companies/c-42/sync'))['status']}")
        for company_id in mapped:
            say(await call("GET", f"/api/v1/companies/{company_id}/agreement", params={"format": "text"}))

        await move_clock(datetime(2026, 12, 2, 8, 0, tzinfo=UTC))
        say("7. A month end later: the MSP runs agreement invoicing. What each customer pays for our product:")
        await worker.drain()
        december = {company_id: await invoice(agreement) for company_id, agreement in mapped.items()}
        _print_lines(say, december)
        contoso_december = _total(december["c-42"])
        # 3.00 × (13 days × 1 + 15 days × 9) / 30 = 14.80 for November (billing started 3 Nov) + 9 × 3.00 for December
        check(
            contoso_december == Decimal("41.80"), f"Contoso's December invoice should be 41.80, not {contoso_december}"
        )
        check(
            bool(preview["proration_after"]) and Decimal(preview["proration_after"]["amount"]) == Decimal("14.80"),
            "the preview and the invoiced proration should agree",
        )
        # 2.50 × 28/30 for November (from 3 Nov, the override counting from the day billing started) + 2.50
        check(_total(december["c-77"]) == Decimal("4.83"), "Fabrikam's December invoice should be 2.33 + 2.50")

        await move_clock(datetime(2026, 12, 5, 10, 0, tzinfo=UTC))
        say("8. A late delivery: Contoso went down to 5 licenses on 25 Nov (reported today)")
        await webhook(
            {
                "type": "license.count_changed",
                "data": {
                    "company_id": "c-42",
                    "license_count": 5,
                    "previous_count": 9,
                    "effective_at": "2026-11-25T10:00:00Z",
                    "sequence": 18,
                },
            },
            "lic-c-42-18",
        )
        await worker.drain()
        say(await call("GET", "/api/v1/companies/c-42/agreement", params={"format": "text"}))

        await move_clock(datetime(2027, 1, 2, 8, 0, tzinfo=UTC))
        say("9. January's invoicing run: the late change is caught up, explained")
        await worker.drain()
        january = {company_id: await invoice(agreement) for company_id, agreement in mapped.items()}
        _print_lines(say, january)
        contoso_january = _total(january["c-42"])
        # 5 × 3.00 for January; November now owes 3.00 × (13 + 9 × 9 + 6 × 5)/30 = 12.40 (billed 14.80: −2.40);
        # December billed 9 in advance but 5 were in force at the end of November (−12.00).
        check(contoso_january == Decimal("0.60"), f"Contoso's January invoice should be 0.60, not {contoso_january}")
        check(
            any(line["description"].startswith("Adjustment for 1–30 Nov 2026") for line in january["c-42"]),
            "the catch-up line should explain itself",
        )
    if cw_http is not None:
        await cw_http.aclose()
    await ctx.aclose()
    await ctx.engine.dispose()
    say(
        "\nDemo finished: what CW invoiced is what the license history owed."
        if not problems
        else f"Demo FAILED: {len(problems)} problem(s)."
    )
    return DemoResult(ok=not problems, problems=problems)


def _basic() -> str:
    import base64

    return "Basic " + base64.b64encode(b"sandbox+sandbox-public:sandbox-private").decode()


def _total(lines: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(line["amount"]) for line in lines if _ours(line)), Decimal(0))


def _ours(line: dict[str, Any]) -> bool:
    return is_ours(line.get("serialNumber"))


def _print_lines(say: Any, invoices: dict[str, list[dict[str, Any]]]) -> None:
    for company_id, lines in invoices.items():
        say(f"   {company_id}:")
        for line in lines:
            if _ours(line):
                say(f"     {Decimal(line['amount']):>9}  {line['description']}")
        say(f"     {_total(lines):>9}  total")
