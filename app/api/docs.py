"""`/docs`: Swagger UI served from the service itself (its files come from the `swagger-ui-bundle` package, never a
CDN, so the docs work on a machine without internet), and the API's introduction."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
EXAMPLES_PATH = Path(__file__).with_name("examples.json")  # recorded by `python -m app.examples`

INTRODUCTION = """\
Keeps ConnectWise Manage agreement additions in step with the license counts a vendor's partner portal reports.

**Tenants and tokens.** Every MSP is a tenant, created with `cw-billing-sync tenant create`, which prints an API
client (`client_id`, `client_secret`) and the portal's webhook secret once. Exchange the client for a bearer token
(10 minutes) at `POST /api/v1/auth/token` (OAuth2 client credentials, form or JSON) and send it as
`Authorization: Bearer …`. A token only ever sees its own tenant: another tenant's company is simply not found.

**Setting up.** Connect ConnectWise (`PUT /api/v1/connectwise/connection`, then `POST …/connection/test`), turn
billing on (`PATCH /api/v1/billing/settings`), pick or create the product (`PUT`/`POST /api/v1/billing/product`),
map each portal company to its CW company and agreement (`PUT /api/v1/companies/{id}/mapping`) and enable its
billing, optionally with its own price (`PATCH /api/v1/companies/{id}/billing`).

**Money** is a decimal string in every answer, with at least two places and more only for prices that have them
(up to four): `"3.00"`, `"2.50"`, `"3.125"`. Requests take a string or a number.

**Errors** are `application/problem+json` with a stable `code` (for example `not_mapped`, `agreement_shared`,
`cw_not_connected`, `invalid_event`) and a `detail` that says what to do.

**Sync status** (`GET /api/v1/companies/{id}/sync`, `/companies`, `/reconciliation`) uses one vocabulary with a
`cause` and an `action`: `in_sync`, `pending`, `retrying`, `failed`, `drift`, `awaiting_approval`, `dismissed`,
`needs_attention`, `not_mapped`, `deleted`, `billing_disabled`, `billing_off_for_tenant`.

**Webhooks** from the portal arrive at `POST /webhooks/portal/{tenant_id}`, signed as Standard Webhooks
(`webhook-id`, `webhook-timestamp`, `webhook-signature`: HMAC-SHA256 over `id.timestamp.body`); the answer is 202
once the delivery is stored, and `GET /api/v1/webhook-deliveries/{webhook_id}` shows what applying it did. The
events and their payloads are under that operation; docs/webhooks.md has the details and a sender in Python.
"""


def install_docs(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} – API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )


@cache
def _examples() -> dict[str, dict[str, Any]]:
    return json.loads(EXAMPLES_PATH.read_text()) if EXAMPLES_PATH.exists() else {}


def attach_examples(document: dict[str, Any]) -> None:
    """Every operation's recorded request and answer (`app/examples.py`) as the examples of its JSON body and of its
    success answer."""
    examples = _examples()
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            recorded = examples.get(operation.get("operationId", ""))
            if recorded is None:
                continue
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                if recorded.get("request") is not None:
                    media["example"] = recorded["request"]
            for status, answer in operation.get("responses", {}).items():
                if status.startswith("2"):
                    for media_type, media in answer.get("content", {}).items():
                        if media_type.endswith("json"):
                            media["example"] = recorded["response"]
