"""The audit trail: who changed what, before and after. Never holds secrets."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditEvent
from app.db.repositories.audit import AuditFilter, audit_page
from app.domain.money import decimal_text

__all__ = ["AuditFilter", "audit_page", "jsonable", "record_audit"]


async def record_audit(
    session: AsyncSession,
    *,
    tenant_id: str,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=jsonable(before),
        after=jsonable(after),
    )
    session.add(event)
    return event


def jsonable(value: Any) -> Any:
    """Decimals as text (money: "3.00"; counts: "9"), datetimes and dates as ISO text: what JSON columns and API
    clients can hold, in the API's one money format."""
    return _jsonable(value, "")


def _jsonable(value: Any, field: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, field) for v in value]
    if isinstance(value, Decimal):
        return decimal_text(field, value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
