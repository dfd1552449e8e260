"""`python -m app.examples`: record a realistic example of every operation's request and answer, by walking the
whole story through the API against the in-process sandbox on a fixed date, into `app/api/examples.json`, which
the OpenAPI document (and `/docs`) shows. Run it again after changing an API shape; a test checks that every
operation has its examples and that each still matches its schema."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from app.api.docs import EXAMPLES_PATH
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.db.migrate import upgrade_to_head
from app.main import create_app
from app.security.encryption import generate_key
from app.security.webhooks import sign
from app.services.tenants import create_tenant
from app.settings import Environment, load_settings
from app.sync.worker import Worker

DAY = datetime(2026, 11, 16, 14, 0, tzinfo=UTC)


async def capture() -> dict[str, dict[str, Any]]:
    data_dir = Path(tempfile.mkdtemp(prefix="cwbs-examples-"))
    settings = load_settings(
        app_env=Environment.production,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'examples.db'}",
        data_dir=data_dir,
        jwt_signing_key=SecretStr(secrets.token_urlsafe(48)),
        encryption_keys=[SecretStr(generate_key())],
        log_level="WARNING",
        run_worker=False,
        cw_sandbox=True,
    )
    app = create_app(settings)
    ctx = app.state.ctx
    ctx.clock.freeze(DAY)
    await upgrade_to_head(ctx.engine)
    async with ctx.sessionmaker() as session, session.begin():
        tenant = await create_tenant(session, box=ctx.secrets, name="Contoso IT")
    examples: dict[str, dict[str, Any]] = {}

    templates = [
        (re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"), methods)
        for template, methods in app.openapi()["paths"].items()
    ]

    def operation_of(method: str, path: str) -> str:
        for pattern, methods in templates:
            if pattern.match(path) and method.lower() in methods:
                return str(methods[method.lower()]["operationId"])
        raise LookupError(f"{method} {path}")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://example") as api:
        headers: dict[str, str] = {}

        async def call(
            method: str,
            path: str,
            body: Any = None,
            *,
            form: dict[str, str] | None = None,
            params: dict[str, Any] | None = None,
        ) -> Any:
            response = await api.request(method, path, json=body, data=form, params=params, headers=headers)
            assert response.status_code < 300, (method, path, response.status_code, response.text)  # noqa: S101
            answer = response.json()
            examples.setdefault(
                operation_of(method, path), {"request": body if body is not None else form, "response": answer}
            )
            return answer

        token = await call(
            "POST", "/api/v1/auth/token", form={"client_id": tenant.client_id, "client_secret": tenant.client_secret}
        )
        headers["Authorization"] = f"Bearer {token['access_token']}"
        await call("GET", "/api/v1/auth/whoami")
        connection = {
            "site_url": IN_PROCESS_SITE,
            "company_id": "sandbox",
            "public_key": "sandbox-public",
            "private_key": "sandbox-private",
            "client_id": "3f1c2a9e-0000-4000-8000-000000000001",
        }
        await call("PUT", "/api/v1/connectwise/connection", connection)
        await call("GET", "/api/v1/connectwise/connection")
        await call("POST", "/api/v1/connectwise/connection/test")
        await call("GET", "/api/v1/billing/settings")
        await call("PATCH", "/api/v1/billing/settings", {"enabled": True, "timezone": "Europe/Berlin"})
        found_items = await call("GET", "/api/v1/connectwise/catalog", params={"search": "VEND"})
        items = [i for i in found_items if i["usable"]]
        await call("GET", "/api/v1/connectwise/catalog/options")
        await call(
            "PUT",
            "/api/v1/billing/product",
            {"cw_catalog_item_id": items[0]["id"], "unit_price": "3.00", "unit_cost": "1.00"},
        )
        await call("GET", "/api/v1/billing/product")
        await call("PATCH", "/api/v1/billing/product", {"unit_price": "3.00", "unit_cost": "1.20"})
        options = await call("GET", "/api/v1/connectwise/catalog/options")
        await call(
            "POST",
            "/api/v1/billing/product",
            {
                "identifier": "VEND-XDR",
                "description": "Vendor XDR license",
                "customer_description": "Extended detection and response, per device",
                "subcategory_id": options["subcategories"][0]["id"],
                "type_id": options["types"][0]["id"],
                "unit_price": "4.50",
                "unit_cost": "2.00",
                "taxable": False,
            },
        )
        await call(
            "PUT",
            "/api/v1/billing/product",
            {"cw_catalog_item_id": items[0]["id"], "unit_price": "3.00", "unit_cost": "1.00"},
        )
        await call("PUT", "/api/v1/companies/c-42", {"name": "Contoso", "identifier": "CONTOSO"})
        await call("GET", "/api/v1/companies/c-42/suggestions")
        found = await call("GET", "/api/v1/connectwise/companies", params={"search": "CONTOSO"})
        agreements = await call("GET", f"/api/v1/connectwise/companies/{found[0]['id']}/agreements")
        mapping = {"cw_company_id": found[0]["id"], "cw_agreement_id": agreements[0]["id"]}
        await call("PUT", "/api/v1/companies/c-42/mapping", mapping)
        await call("PATCH", "/api/v1/companies/c-42/billing", {"enabled": True, "unit_price": "2.50"})
        event = {
            "type": "license.count_changed",
            "data": {
                "company_id": "c-42",
                "license_count": 9,
                "previous_count": 0,
                "sequence": 1,
                "effective_at": "2026-11-16T09:30:00Z",
            },
        }
        body = json.dumps(event).encode()
        stamp = int(datetime.now(UTC).timestamp())
        sent = await api.post(
            f"/webhooks/portal/{tenant.tenant_id}",
            content=body,
            headers={
                "webhook-id": "msg_2kQm7w1f",
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign(
                    secret=tenant.webhook_secret, webhook_id="msg_2kQm7w1f", timestamp=stamp, body=body
                ),
                "content-type": "application/json",
            },
        )
        examples[operation_of("POST", f"/webhooks/portal/{tenant.tenant_id}")] = {
            "request": event,
            "response": sent.json(),
        }
        await Worker(ctx, full_reconcile_every=None).drain()
        await call("GET", "/api/v1/webhook-deliveries/msg_2kQm7w1f")
        await call(
            "POST",
            "/api/v1/companies/c-42/license-changes/preview",
            {"license_count": 12, "effective_at": "2026-11-20T08:00:00Z"},
        )
        await call("GET", "/api/v1/companies/c-42/sync")
        await call("POST", "/api/v1/companies/c-42/sync", {})
        await Worker(ctx, full_reconcile_every=None).drain()
        await call("GET", "/api/v1/companies/c-42/agreement")
        await call("GET", "/api/v1/companies/c-42/charges")
        await call("GET", "/api/v1/companies/c-42/periods", params={"from": "2026-11-01", "to": "2026-12-31"})
        await call("GET", "/api/v1/companies/c-42")
        await call("GET", "/api/v1/companies", params={"limit": 10})
        await call("GET", "/api/v1/reconciliation", params={"limit": 10})
        await call("POST", "/api/v1/reconciliation/approve", {"company_ids": ["c-42"]})
        await call("POST", "/api/v1/reconciliation/retry")
        await call("PUT", "/api/v1/companies/c-7", {"name": "Fabrikam", "identifier": "FABRIKAM"})
        fabrikam = await call("GET", "/api/v1/connectwise/companies", params={"search": "FABRIKAM"})
        if fabrikam:
            own = await call("GET", f"/api/v1/connectwise/companies/{fabrikam[0]['id']}/agreements")
            await call(
                "PUT",
                "/api/v1/companies/c-7/mapping",
                {"cw_company_id": fabrikam[0]["id"], "cw_agreement_id": own[0]["id"]},
            )
            await call("DELETE", "/api/v1/companies/c-7/mapping")
        await call("GET", "/api/v1/audit-events", params={"object_id": "c-42", "limit": 3})
        headers.pop("Authorization")
        await call("GET", "/healthz")
        await call("GET", "/readyz")
    await ctx.aclose()
    await ctx.engine.dispose()
    return examples


_PLACEHOLDERS = {
    "access_token": "eyJhbGciOiJIUzI1NiJ9.<claims>.<signature>",
    "client_secret": "<the client secret tenant create printed>",
    "private_key": "<your ConnectWise private key>",
}


def _scrubbed(value: Any) -> Any:
    """Secrets of the throw-away run replaced by placeholders (they would work nowhere, but look like they might)."""
    if isinstance(value, dict):
        return {k: _PLACEHOLDERS[k] if k in _PLACEHOLDERS else _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def main() -> None:
    examples = _scrubbed(asyncio.run(capture()))
    EXAMPLES_PATH.write_text(json.dumps(examples, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {len(examples)} operations' examples to {EXAMPLES_PATH}")


if __name__ == "__main__":
    main()
