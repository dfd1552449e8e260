"""Encryption-key rotation: re-encrypt every stored secret under the primary key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import WebhookSecret
from app.security.encryption import SecretBox
from app.services.tenants import WEBHOOK_SECRET_PURPOSE


async def reencrypt_all(session: AsyncSession, *, box: SecretBox) -> int:
    count = 0
    for row in await session.scalars(select(WebhookSecret)):
        if box.needs_rotation(row.secret_encrypted):
            row.secret_encrypted = box.rotate(
                row.secret_encrypted, tenant_id=row.tenant_id, purpose=WEBHOOK_SECRET_PURPOSE
            )
            count += 1
    return count
