"""Sending portal webhooks in tests, signed with the reference Standard Webhooks library."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from app.context import AppContext
from app.services.applier import apply_pending

_sequences = itertools.count(1_000_000)  # for events a test does not give a sequence of its own


async def apply_deliveries(ctx: AppContext) -> int:
    """What the worker's applier does: stored deliveries into the license history."""
    total = 0
    while True:
        async with ctx.sessionmaker() as session, session.begin():
            applied = await apply_pending(session, now=ctx.now())
        if not applied:
            return total
        total += applied


def signed_headers(
    secret: str, body: str, *, webhook_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, moment, body),
        "content-type": "application/json",
    }


async def deliver(
    client: httpx.AsyncClient,
    tenant_id: str,
    secret: str,
    payload: dict[str, Any],
    *,
    webhook_id: str | None = None,
    at: datetime | None = None,
    apply: bool = True,
) -> httpx.Response:
    """Send a signed delivery through the route; then (`apply`) let the applier apply what was stored, as the worker
    does right after."""
    body = json.dumps(payload)
    response = await client.post(
        f"/webhooks/portal/{tenant_id}",
        content=body,
        headers=signed_headers(secret, body, webhook_id=webhook_id, at=at),
    )
    app = getattr(client._transport, "app", None)
    if apply and app is not None and response.status_code == 202:
        await apply_deliveries(app.state.ctx)
    return response


def license_event(
    company_id: str,
    count: int,
    *,
    sequence: int | None = None,
    previous: int | None = None,
    effective_at: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "company_id": company_id,
        "license_count": count,
        "sequence": sequence if sequence is not None else next(_sequences),
    }
    if previous is not None:
        data["previous_count"] = previous
    if effective_at is not None:
        data["effective_at"] = effective_at
    if name is not None:
        data["company_name"] = name
    return {"type": "license.count_changed", "data": data}
