"""A tenant's ConnectWise connection: stored encrypted, checked against SSRF, turned into a client."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Literal

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.client import ConnectWiseClient, CWCredentials
from app.connectwise.errors import CWError, CWForbiddenError
from app.context import AppContext
from app.db.models import CwConnection
from app.errors import ConflictError, UnprocessableError
from app.schemas.setup import ConnectionCheck, ConnectionRead, ConnectionTestResult, ConnectionUpdate
from app.security.encryption import DecryptionError
from app.security.principal import Principal
from app.security.ssrf import Resolver, UnsafeSiteError, check_site_url, system_resolver
from app.services.audit import record_audit
from app.services.sync_schedule import requeue_stuck

PRIVATE_KEY_PURPOSE = "cw_private_key"
CLIENT_ID_PURPOSE = "cw_client_id"


class NotConnectedError(ConflictError):
    code = "cw_not_connected"
    title = "ConnectWise is not connected"


class UnsafeSiteUrlError(UnprocessableError):
    code = "unsafe_site_url"
    title = "This ConnectWise site URL is not allowed"


class MissingSecretError(UnprocessableError):
    code = "missing_secret"
    title = "The private key and clientId are required when connecting for the first time or to another site"


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


def connection_view(connection: CwConnection) -> ConnectionRead:
    """The connection as the API shows it: never the secrets, only whether they are set."""
    return ConnectionRead(
        site_url=connection.site_url,
        company_id=connection.login_company_id,
        public_key=connection.public_key,
        private_key_set=bool(connection.private_key_encrypted),
        client_id_set=bool(connection.client_id_encrypted),
        updated_at=connection.updated_at,
    )


async def save_connection(
    session: AsyncSession, ctx: AppContext, principal: Principal, body: ConnectionUpdate
) -> ConnectionRead:
    """Connect or reconnect. The stored keys are only ever sent to the site they were entered for: a new site needs
    the private key and clientId again (DESIGN §9)."""
    try:
        site = await normalize_site(ctx, body.site_url)
    except UnsafeSiteError as exc:
        raise UnsafeSiteUrlError(str(exc)) from None
    tenant_id = principal.tenant_id
    connection = await session.get(CwConnection, tenant_id)
    if connection is None and (body.private_key is None or body.client_id is None):
        raise MissingSecretError()
    if connection is not None and site != connection.site_url and (body.private_key is None or body.client_id is None):
        raise MissingSecretError(
            f"The site changes from {connection.site_url} to {site}: enter the private key and clientId for it again"
        )
    before = (
        None
        if connection is None
        else {
            "site_url": connection.site_url,
            "company_id": connection.login_company_id,
            "public_key": connection.public_key,
        }
    )
    if connection is None:
        connection = CwConnection(
            tenant_id=tenant_id,
            site_url=site,
            login_company_id=body.company_id,
            public_key=body.public_key,
            private_key_encrypted="",
            client_id_encrypted="",
        )
        session.add(connection)
    connection.site_url, connection.login_company_id, connection.public_key = site, body.company_id, body.public_key
    rotated = []
    if body.private_key is not None:
        connection.private_key_encrypted = ctx.secrets.encrypt(
            body.private_key.get_secret_value(), tenant_id=tenant_id, purpose=PRIVATE_KEY_PURPOSE
        )
        rotated.append("private_key")
    if body.client_id is not None:
        connection.client_id_encrypted = ctx.secrets.encrypt(
            body.client_id.get_secret_value(), tenant_id=tenant_id, purpose=CLIENT_ID_PURPOSE
        )
        rotated.append("client_id")
    await session.flush()
    await record_audit(
        session,
        tenant_id=tenant_id,
        actor=principal.actor,
        action="cw_connection.saved",
        object_type="cw_connection",
        object_id=None,
        before=before,
        after={
            "site_url": site,
            "company_id": body.company_id,
            "public_key": body.public_key,
            "secrets_replaced": rotated,
        },
    )
    return connection_view(connection)


async def _check(name: str, checks: list[ConnectionCheck], probe: Awaitable[str]) -> bool:
    """Run one preflight probe; record a readable reason for the MSP."""
    try:
        checks.append(ConnectionCheck(name=name, ok=True, detail=await probe))
        return True
    except CWForbiddenError as exc:
        checks.append(
            ConnectionCheck(
                name=name, ok=False, detail=f"The API member's security role does not allow this: {exc.describe()}"
            )
        )
    except CWError as exc:
        checks.append(ConnectionCheck(name=name, ok=False, detail=exc.describe()))
    return False


async def check_and_requeue(
    session: AsyncSession, ctx: AppContext, tenant_id: str, *, now: datetime
) -> ConnectionTestResult:
    """Test the connection; when every check passes, the companies whose sync failed or keeps retrying (on bad keys,
    missing permissions, an unreachable site) are queued again at once (`requeued`)."""
    result = await check_connection(client_for(ctx, await get_connection(session, tenant_id)))
    if result.ok:
        requeued = await requeue_stuck(session, tenant_id=tenant_id, reason="connection_fixed", at=now)
        result = result.model_copy(update={"requeued": requeued})
    return result


async def check_connection(client: ConnectWiseClient) -> ConnectionTestResult:
    """Codebase lookup, system info and a permission check for everything the sync needs; changes nothing."""
    checks: list[ConnectionCheck] = []
    version = is_cloud = None
    agreement_id: int | None = None

    async def codebase() -> str:
        base = await client.base_url()  # https://{host}/{codebase}apis/3.0, looked up or remembered
        return f"codebase {base.split('/')[3]}/ at {base.split('/')[2]} (the login company exists)"

    async def system_info() -> str:
        nonlocal version, is_cloud
        info = await client.system_info()  # the first call that needs the keys: a wrong key fails here
        version, is_cloud = info.version, info.is_cloud
        return f"ConnectWise {info.version} ({'cloud' if info.is_cloud else 'on-premise'})"

    async def read(resource: Literal["companies", "agreements", "catalog"], what: str) -> str:
        nonlocal agreement_id
        first = await client.first_id(resource)
        if resource == "agreements":
            agreement_id = first
        return f"can read {what}"

    async def add_additions() -> str:
        if agreement_id is None:
            raise CWError("no agreement to check against; create one in ConnectWise first")
        await client.probe_addition_create(agreement_id)
        return "can add agreement additions"

    async def edit_additions() -> str:
        if agreement_id is None:
            raise CWError("no agreement to check against")
        await client.probe_addition_edit(agreement_id)
        return "can edit agreement additions"

    if await _check("codebase", checks, codebase()) and await _check("system_info", checks, system_info()):
        await _check("read_companies", checks, read("companies", "companies"))
        await _check("read_agreements", checks, read("agreements", "agreements"))
        await _check("read_catalog", checks, read("catalog", "the product catalog"))
        await _check("add_additions", checks, add_additions())
        await _check("edit_additions", checks, edit_additions())
    return ConnectionTestResult(ok=all(c.ok for c in checks), version=version, is_cloud=is_cloud, checks=checks)
