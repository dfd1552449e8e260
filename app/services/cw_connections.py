"""A tenant's ConnectWise connection: stored encrypted, checked against SSRF, turned into a client."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.client import ConnectWiseClient, CWCredentials
from app.context import AppContext
from app.db.models import CwConnection
from app.errors import ConflictError
from app.security.encryption import DecryptionError
from app.security.ssrf import Resolver, check_site_url, system_resolver

PRIVATE_KEY_PURPOSE = "cw_private_key"
CLIENT_ID_PURPOSE = "cw_client_id"


class NotConnectedError(ConflictError):
    code = "cw_not_connected"
    title = "ConnectWise is not connected"


async def normalize_site(ctx: AppContext, url: str, *, resolver: Resolver = system_resolver) -> str:
    return await check_site_url(
        url,
        allow_private=ctx.settings.cw_allow_private_sites,
        trusted_hosts=ctx.cw_mounted_sites,
        resolver=resolver,
    )


async def get_connection(session: AsyncSession, tenant_id: str) -> CwConnection:
    connection = await session.get(CwConnection, tenant_id)
    if connection is None:
        raise NotConnectedError("Connect ConnectWise first: PUT /api/v1/connectwise/connection")
    return connection


class ConnectionUnreadableError(ConflictError):
    code = "cw_connection_unreadable"
    title = "The stored ConnectWise keys cannot be decrypted"


def credentials_for(ctx: AppContext, connection: CwConnection) -> CWCredentials:
    tenant_id = connection.tenant_id
    try:
        return _credentials(ctx, connection, tenant_id)
    except DecryptionError:
        raise ConnectionUnreadableError(
            "Re-enter the private key and clientId (PUT /api/v1/connectwise/connection); the stored values were "
            "encrypted with a key this server no longer has, or for another tenant"
        ) from None


def _credentials(ctx: AppContext, connection: CwConnection, tenant_id: str) -> CWCredentials:
    return CWCredentials(
        site_url=connection.site_url,
        company_id=connection.login_company_id,
        public_key=connection.public_key,
        private_key=SecretStr(
            ctx.secrets.decrypt(connection.private_key_encrypted, tenant_id=tenant_id, purpose=PRIVATE_KEY_PURPOSE)
        ),
        client_id=SecretStr(
            ctx.secrets.decrypt(connection.client_id_encrypted, tenant_id=tenant_id, purpose=CLIENT_ID_PURPOSE)
        ),
    )


def client_for(
    ctx: AppContext, connection: CwConnection, *, attempts: int = 6, retry_timeout: float = 120.0
) -> ConnectWiseClient:
    """A CW client for this tenant over `ctx.cw_http` (the guarded network, or a transport mounted for its site)."""
    # Re-checked at use, not only when saved: settings may have changed since (no DNS here; every connection the
    # client opens is checked and pinned by the guarded network backend).
    if not ctx.settings.cw_allow_private_sites and not connection.site_url.startswith("https://"):
        raise NotConnectedError("The saved ConnectWise site is no longer allowed: the site must use https")
    metrics = ctx.metrics
    return ConnectWiseClient(
        ctx.cw_http,
        credentials_for(ctx, connection),
        budget=ctx.budgets.for_tenant(connection.tenant_id),
        api_version=ctx.settings.cw_api_version,
        on_call=lambda method, outcome: metrics.cw_calls.labels(method, outcome).inc(),
        attempts=attempts,
        retry_timeout=retry_timeout,
        codebase_cache=ctx.codebases,
        cycle_cache=ctx.billing_cycles.setdefault(connection.tenant_id, {}),
    )


async def tenant_client(ctx: AppContext, session: AsyncSession, tenant_id: str) -> ConnectWiseClient:
    return client_for(ctx, await get_connection(session, tenant_id))
