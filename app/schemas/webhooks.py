"""Webhook answers and delivery records. The events themselves are domain types (`app/domain/events.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.db.models import DeliveryOutcome


class WebhookAck(BaseModel):
    status: Literal["accepted", "duplicate"] = Field(
        description="accepted: stored, applied shortly (see GET /api/v1/webhook-deliveries/{webhook_id}); "
        "duplicate: this webhook-id was already received, no second effect"
    )


class DeliveryRead(BaseModel):
    webhook_id: str
    event_type: str
    received_at: datetime
    status: Literal["pending", "applied"] = Field(description="pending: stored, not applied yet; applied: done")
    outcome: DeliveryOutcome | None = Field(
        description="Once applied: applied, duplicate_sequence, conflict, created, restored, deleted, unknown_company, "
        "unknown_type, invalid"
    )
    detail: str | None = None
    applied_at: datetime | None = None
    company_id: str | None = Field(default=None, description="The portal company the event is about")
