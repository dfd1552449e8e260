"""Webhook deliveries as the API shows them, and the record of refused ones."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.db.models import RejectedDelivery, WebhookInbox
from app.errors import NotFoundError
from app.logging import get_logger
from app.schemas.webhooks import DeliveryRead

log = get_logger("app.intake")
REJECTED_BODY_KEPT = 4096


async def record_rejected(
    ctx: AppContext, *, tenant_id: str, webhook_id: str, body: bytes, detail: str, received_at: datetime
) -> None:
    """Keep a signed delivery refused as invalid, for inspection. Best effort: failing to keep it never changes the
    answer (422)."""
    try:
        async with ctx.sessionmaker() as session, session.begin():
            session.add(
                RejectedDelivery(
                    tenant_id=tenant_id,
                    webhook_id=webhook_id[:200],
                    received_at=received_at,
                    detail=detail[:2000],
                    body=body[:REJECTED_BODY_KEPT].decode("utf-8", "replace").replace("\x00", "\ufffd"),
                )
            )
    except Exception:
        log.warning("intake.rejected_not_kept", webhook_id=webhook_id[:100])


async def get_delivery(session: AsyncSession, *, tenant_id: str, webhook_id: str) -> DeliveryRead:
    row = await session.scalar(
        select(WebhookInbox).where(WebhookInbox.tenant_id == tenant_id, WebhookInbox.webhook_id == webhook_id)
    )
    if row is None:
        raise NotFoundError(f"No delivery {webhook_id!r} in the last 8 days")
    data = row.payload.get("data") if isinstance(row.payload, dict) else None
    company = data.get("company_id") if isinstance(data, dict) else None
    return DeliveryRead(
        webhook_id=row.webhook_id,
        event_type=row.event_type,
        received_at=row.received_at,
        status=row.status,
        outcome=row.outcome,
        detail=row.detail,
        applied_at=row.applied_at,
        company_id=str(company)[:128] if company is not None else None,
    )


INBOX_RETENTION = timedelta(days=8)  # at least the 7 days within which a redelivery must have no effect


async def purge_inbox(session: AsyncSession, *, now: datetime, retention: timedelta = INBOX_RETENTION) -> int:
    """Forget deliveries received before the retention (applied ones; one still pending is never dropped)."""
    result = await session.execute(
        delete(WebhookInbox).where(WebhookInbox.received_at < now - retention, WebhookInbox.status == "applied")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
