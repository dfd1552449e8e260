"""Sending portal webhooks in tests, signed with the reference Standard Webhooks library."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook


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
) -> httpx.Response:
    body = json.dumps(payload)
    return await client.post(
        f"/webhooks/portal/{tenant_id}",
        content=body,
        headers=signed_headers(secret, body, webhook_id=webhook_id, at=at),
    )


def license_event(
    company_id: str,
    count: int,
    *,
    sequence: int | None = None,
    previous: int | None = None,
    effective_at: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"company_id": company_id, "license_count": count}
    if sequence is not None:
        data["sequence"] = sequence
    if previous is not None:
        data["previous_count"] = previous
    if effective_at is not None:
        data["effective_at"] = effective_at
    if name is not None:
        data["company_name"] = name
    return {"type": "license.count_changed", "data": data}
