"""Tenants, API clients and webhook signing secrets (the CLI, the tests), and the cache of decrypted secrets
that webhook signatures are checked against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.base import utcnow
from app.db.models import ApiClient, Tenant, WebhookSecret
from app.errors import ConflictError, NotFoundError
from app.security.credentials import hash_client_secret, new_client_id, new_client_secret, new_webhook_secret
from app.security.encryption import SecretBox
from app.services.audit import record_audit

WEBHOOK_SECRET_PURPOSE = "webhook_secret"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True, slots=True)
class IssuedClient:
    client_id: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class NewTenant:
    tenant_id: str
    client_id: str
    client_secret: str
    webhook_secret: str


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"No tenant {tenant_id}")
    return tenant


class TenantExistsError(ConflictError):
    code = "tenant_exists"
    title = "A tenant with this name exists"


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    return list(await session.scalars(select(Tenant).order_by(Tenant.name, Tenant.id)))


async def list_clients(session: AsyncSession, tenant_id: str) -> list[ApiClient]:
    await get_tenant(session, tenant_id)
    return list(
        await session.scalars(select(ApiClient).where(ApiClient.tenant_id == tenant_id).order_by(ApiClient.created_at))
    )


async def revoke_client(session: AsyncSession, *, client_id: str, now: datetime) -> ApiClient:
    """Revoke an API client: its tokens stop working at once (every request checks the client)."""
    client = await session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None:
        raise NotFoundError(f"No API client {client_id}")
    if client.revoked_at is None:
        client.revoked_at = now
        await record_audit(
            session,
            tenant_id=client.tenant_id,
            actor="cli",
            action="api_client.revoked",
            object_type="api_client",
            object_id=client.client_id,
        )
    return client


async def create_client(session: AsyncSession, *, tenant_id: str, name: str = "default") -> IssuedClient:
    await get_tenant(session, tenant_id)
    secret = new_client_secret()
    client = ApiClient(
        tenant_id=tenant_id, client_id=new_client_id(), secret_hash=hash_client_secret(secret), name=name
    )
    session.add(client)
    await session.flush()
    await record_audit(
        session,
        tenant_id=tenant_id,
        actor="cli",
        action="api_client.created",
        object_type="api_client",
        object_id=client.client_id,
        after={"name": name},
    )
    return IssuedClient(client_id=client.client_id, client_secret=secret)


async def rotate_webhook_secret(
    session: AsyncSession, *, box: SecretBox, tenant_id: str, grace: timedelta, now: datetime | None = None
) -> str:
    """Make a new current secret; the previous ones stay valid for `grace` (never longer than they already were)."""
    tenant = await get_tenant(session, tenant_id)
    tenant.secrets_version += 1
    now = now or utcnow()  # real time: a secret's validity is a security check, not billing (app/clock.py)
    until = now + grace
    previous = await session.scalars(select(WebhookSecret).where(WebhookSecret.tenant_id == tenant_id))
    for old in previous:
        if old.expires_at is None or old.expires_at > until:
            old.expires_at = until
    secret = new_webhook_secret()
    session.add(
        WebhookSecret(
            tenant_id=tenant_id,
            secret_encrypted=box.encrypt(secret, tenant_id=tenant_id, purpose=WEBHOOK_SECRET_PURPOSE),
        )
    )
    await session.flush()
    await record_audit(
        session,
        tenant_id=tenant_id,
        actor="cli",
        action="webhook_secret.rotated",
        object_type="webhook_secret",
        object_id=None,
        after={"previous_valid_until": until.isoformat()},
    )
    return secret


async def webhook_secret_entries(
    db: AsyncSession | AsyncConnection, *, box: SecretBox, tenant_id: str, now: datetime | None = None
) -> list[tuple[str, datetime | None]]:
    """(secret, valid until) for every secret still valid now; until is None for the current one."""
    now = now or utcnow()
    rows = await db.execute(
        select(WebhookSecret.secret_encrypted, WebhookSecret.expires_at)
        .where(
            WebhookSecret.tenant_id == tenant_id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.created_at.desc())
    )
    return [
        (box.decrypt(encrypted, tenant_id=tenant_id, purpose=WEBHOOK_SECRET_PURPOSE), expires_at)
        for encrypted, expires_at in rows
    ]


async def create_tenant(
    session: AsyncSession, *, box: SecretBox, name: str, allow_same_name: bool = False
) -> NewTenant:
    """A tenant with a first API client and a webhook secret. A name another tenant has is refused (two MSPs under
    one name are a typo more often than not) unless `allow_same_name`."""
    if not allow_same_name:
        same = await session.scalar(select(Tenant.id).where(func.lower(Tenant.name) == name.strip().lower()).limit(1))
        if same is not None:
            raise TenantExistsError(
                f"Tenant {same} is already called {name!r}; pass --allow-same-name if that is meant"
            )
    tenant = Tenant(name=name)
    session.add(tenant)
    await session.flush()
    await record_audit(
        session,
        tenant_id=tenant.id,
        actor="cli",
        action="tenant.created",
        object_type="tenant",
        object_id=tenant.id,
        after={"name": name},
    )
    client = await create_client(session, tenant_id=tenant.id)
    webhook_secret = await rotate_webhook_secret(session, box=box, tenant_id=tenant.id, grace=timedelta(0))
    return NewTenant(
        tenant_id=tenant.id,
        client_id=client.client_id,
        client_secret=client.client_secret,
        webhook_secret=webhook_secret,
    )


class WebhookSecretCache:
    """Decrypted portal secrets per tenant, valid while the tenant's `secrets_version` stays where it was when they
    were loaded (every rotation, in any process, bumps it)."""

    def __init__(self, box: Callable[[], SecretBox]) -> None:
        self._box = box
        self._entries: dict[str, tuple[int, list[tuple[str, datetime | None]]]] = {}

    def cached(self, tenant_id: str) -> tuple[int, list[str]] | None:
        """(secrets_version, secrets still valid now) as last loaded, or None if never loaded."""
        entry = self._entries.get(tenant_id)
        if entry is None:
            return None
        now = utcnow()
        return entry[0], [secret for secret, until in entry[1] if until is None or until > now]

    async def load(self, db: AsyncSession | AsyncConnection, *, tenant_id: str, secrets_version: int) -> list[str]:
        """Read and decrypt the tenant's secrets; `secrets_version` is the version read in the same transaction."""
        entries = await webhook_secret_entries(db, box=self._box(), tenant_id=tenant_id)
        self._entries[tenant_id] = (secrets_version, entries)
        return [secret for secret, _ in entries]
