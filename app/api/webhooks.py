"""`POST /webhooks/portal/{tenant_id}`: Standard Webhooks verified on the raw body, then one commit and 202."""

from __future__ import annotations

import json
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ValidationError

from app.api import openapi_components
from app.api.deps import ContextDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.webhooks import PortalEvent, WebhookAck
from app.db.base import utcnow
from app.db.models import Tenant
from app.errors import PayloadTooLargeError, UnprocessableError, WebhookSignatureError
from app.logging import get_logger
from app.security.webhooks import SignatureError, verify
from app.services.tenants import webhook_secret_entries
from app.services.webhook_intake import Event, accept_event

MAX_BODY_BYTES = 64 * 1024
KNOWN_TYPES = {"license.count_changed", "company.upserted", "company.deleted"}

router = APIRouter(tags=["webhooks"])
log = get_logger("app.webhooks")


class InvalidEventError(UnprocessableError):
    code = "invalid_event"
    title = "The event does not match the webhook contract"


async def read_limited_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Webhook bodies are limited to {limit} bytes")
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"Webhook bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class VerifiedDelivery:
    def __init__(self, tenant: Tenant, webhook_id: str, body: bytes) -> None:
        self.tenant = tenant
        self.webhook_id = webhook_id
        self.body = body


async def verified_delivery(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    tenant_id: Annotated[str, Path(max_length=64)],
) -> VerifiedDelivery:
    """Body limit, then signature — before anything is parsed. Every failure is a 401 (or 413 for size)."""
    body = await read_limited_body(request)
    headers = request.headers
    webhook_id = headers.get("webhook-id")
    structlog.contextvars.bind_contextvars(tenant_id=tenant_id, webhook_id=(webhook_id or "")[:100])
    tenant = await session.get(Tenant, tenant_id)

    async def check(secrets: list[str]) -> None:
        verify(
            secrets=secrets,
            webhook_id=webhook_id,
            timestamp=headers.get("webhook-timestamp"),
            signature_header=headers.get("webhook-signature"),
            body=body,
        )

    try:
        if tenant is None:
            await check([])
        else:
            cached = _cached_secrets(ctx, tenant)
            await check(cached if cached is not None else await _load_secrets(ctx, session, tenant))
    except SignatureError as exc:
        ctx.metrics.webhooks.labels("rejected").inc()
        log.info("webhook.rejected", reason=str(exc))
        raise WebhookSignatureError(str(exc) if tenant else "no signature matches") from None
    if tenant is None or webhook_id is None:  # verify() has already refused these; keep the types honest
        raise WebhookSignatureError("no signature matches")
    return VerifiedDelivery(tenant, webhook_id, body)


def _cached_secrets(ctx: ContextDep, tenant: Tenant) -> list[str] | None:
    """This process's decrypted secrets, if no rotation happened since (any process bumps secrets_version), without
    those whose grace period has ended since they were loaded."""
    entry = ctx.webhook_secrets.get(tenant.id)
    if entry is None or entry[0] != tenant.secrets_version:
        return None
    now = utcnow()
    return [secret for secret, until in entry[1] if until is None or until > now]


async def _load_secrets(ctx: ContextDep, session: SessionDep, tenant: Tenant) -> list[str]:
    entries = await webhook_secret_entries(session, box=ctx.secrets, tenant_id=tenant.id)
    ctx.webhook_secrets[tenant.id] = (tenant.secrets_version, entries)
    return [secret for secret, _ in entries]


def parse_event(body: bytes) -> tuple[Event | None, dict[str, Any]]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidEventError("The body is not JSON") from None
    if b"\x00" in body or b"\\u0000" in body:
        raise InvalidEventError("NUL characters are not allowed")
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise InvalidEventError("The body must be an object with a string `type`")
    if payload["type"] not in KNOWN_TYPES:
        return None, payload
    try:
        return PortalEvent.model_validate(payload).root, payload
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidEventError(
            problems,
            extra={"errors": [{"loc": list(e["loc"][1:]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]},
        ) from None


@router.post(
    "/webhooks/portal/{tenant_id}",
    status_code=202,
    response_model=WebhookAck,
    summary="Receive a signed portal event (Standard Webhooks)",
    responses={
        200: {"model": WebhookAck, "description": "Already received (same webhook-id): no second effect"},
        **error_responses(WebhookSignatureError, PayloadTooLargeError, InvalidEventError),
    },
    openapi_extra={
        "parameters": [
            {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
            for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": openapi_components.register(PortalEvent)}},
        },
    },
)
async def receive_portal_webhook(
    delivery: Annotated[VerifiedDelivery, Depends(verified_delivery)],
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
) -> WebhookAck:
    event, payload = parse_event(delivery.body)
    result = await accept_event(
        session, tenant=delivery.tenant, webhook_id=delivery.webhook_id, event=event, payload=payload
    )
    ctx.metrics.webhooks.labels(result.outcome).inc()
    log.info("webhook.accepted", event_type=payload["type"], outcome=result.outcome)
    if result.duplicate:
        await session.rollback()  # this request owns the transaction: undo what the duplicate applied
        response.status_code = 200
        return WebhookAck(status="duplicate", outcome="duplicate")
    return WebhookAck(status="accepted", outcome=result.outcome)
