"""API clients (OAuth2 client credentials)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiClient


async def api_client(session: AsyncSession, client_id: str, *, tenant_id: str | None = None) -> ApiClient | None:
    """The client with this id (of this tenant, when given), revoked or not."""
    statement = select(ApiClient).where(ApiClient.client_id == client_id)
    if tenant_id is not None:
        statement = statement.where(ApiClient.tenant_id == tenant_id)
    return await session.scalar(statement)
