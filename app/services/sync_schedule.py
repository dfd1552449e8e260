"""Asking for a reconcile: written in the same transaction as the change that needs it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import SyncState
from app.db.upsert import is_postgres


async def schedule_sync(
    session: AsyncSession, *, tenant_id: str, company_id: str, reason: str, at: datetime | None = None
) -> SyncState:
    """Mark the company due. Repeated calls before the worker runs coalesce into one reconcile."""
    state = await session.get(SyncState, company_id, with_for_update=is_postgres(session))
    due = at or utcnow()
    if state is None:
        state = SyncState(
            company_id=company_id, tenant_id=tenant_id, status="pending", generation=1, due_at=due, reason=reason
        )
        session.add(state)
        return state
    state.generation += 1
    state.reason = reason
    if state.due_at is None or state.due_at > due:
        state.due_at = due
    if state.status in ("in_sync", "failed"):
        state.status = "pending"
        state.attempts = 0
    return state
