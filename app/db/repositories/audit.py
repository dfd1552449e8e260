"""The audit trail, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditEvent


@dataclass(frozen=True, slots=True)
class AuditFilter:
    object_type: str | None = None
    object_id: str | None = None
    action: str | None = None
    since: datetime | None = None


async def audit_page(
    session: AsyncSession, tenant_id: str, where: AuditFilter, *, limit: int, offset: int
) -> tuple[int, list[AuditEvent]]:
    statement = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if where.object_type:
        statement = statement.where(AuditEvent.object_type == where.object_type)
    if where.object_id:
        statement = statement.where(AuditEvent.object_id == where.object_id)
    if where.action:
        statement = statement.where(AuditEvent.action == where.action)
    if where.since is not None:
        statement = statement.where(AuditEvent.created_at >= where.since)
    total = await session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = await session.scalars(statement.order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
    return total, list(rows)
