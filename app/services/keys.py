"""Encryption-key rotation: re-encrypt every stored secret under the primary key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import CwConnection, WebhookSecret
from app.security.encryption import SecretBox
from app.services.cw_connections import CLIENT_ID_PURPOSE, PRIVATE_KEY_PURPOSE
from app.services.tenants import WEBHOOK_SECRET_PURPOSE

# Every encrypted column: (table, column, purpose). A new secret column must be added here to rotate.
ENCRYPTED_COLUMNS: tuple[tuple[type[WebhookSecret] | type[CwConnection], str, str], ...] = (
    (WebhookSecret, "secret_encrypted", WEBHOOK_SECRET_PURPOSE),
    (CwConnection, "private_key_encrypted", PRIVATE_KEY_PURPOSE),
    (CwConnection, "client_id_encrypted", CLIENT_ID_PURPOSE),
)


async def reencrypt_all(session: AsyncSession, *, box: SecretBox) -> int:
    count = 0
    for model, column, purpose in ENCRYPTED_COLUMNS:
        rows: list[WebhookSecret | CwConnection] = list(await session.scalars(select(model)))
        for row in rows:
            value = getattr(row, column)
            if value and box.needs_rotation(value):
                setattr(row, column, box.rotate(value, tenant_id=row.tenant_id, purpose=purpose))
                count += 1
    return count
