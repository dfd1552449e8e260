"""`/api/v1/connectwise/connection`: connect, read (never the secrets), test."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter

from app.api.deps import ContextDep, PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.connectwise.errors import CWError, CWForbiddenError, CWNotFoundError, CWValidationError
from app.db.models import CwConnection
from app.errors import NotAuthenticatedError, UnprocessableError
from app.schemas.setup import ConnectionCheck, ConnectionRead, ConnectionTestResult, ConnectionUpdate
from app.security.ssrf import UnsafeSiteError
from app.services.audit import record_audit
from app.services.cw_connections import (
    CLIENT_ID_PURPOSE,
    PRIVATE_KEY_PURPOSE,
    NotConnectedError,
    client_for,
    get_connection,
    normalize_site,
)

router = APIRouter(prefix="/api/v1/connectwise", tags=["connectwise"])


class UnsafeSiteUrlError(UnprocessableError):
    code = "unsafe_site_url"
    title = "This ConnectWise site URL is not allowed"


class MissingSecretError(UnprocessableError):
    code = "missing_secret"
    title = "The private key and clientId are required when connecting for the first time or to another site"


def _read(connection: CwConnection) -> ConnectionRead:
    return ConnectionRead(
        site_url=connection.site_url,
        company_id=connection.login_company_id,
        public_key=connection.public_key,
        private_key_set=bool(connection.private_key_encrypted),
        client_id_set=bool(connection.client_id_encrypted),
        updated_at=connection.updated_at,
    )


@router.get(
    "/connection",
    response_model=ConnectionRead,
    summary="The ConnectWise connection (secrets omitted)",
    responses=error_responses(NotAuthenticatedError, NotConnectedError),
)
async def get_cw_connection(principal: PrincipalDep, session: SessionDep) -> ConnectionRead:
    return _read(await get_connection(session, principal.tenant_id))


@router.put(
    "/connection",
    response_model=ConnectionRead,
    summary="Connect (or reconnect) ConnectWise",
    responses=error_responses(NotAuthenticatedError, UnsafeSiteUrlError, MissingSecretError),
)
async def put_cw_connection(
    body: ConnectionUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> ConnectionRead:
    try:
        site = await normalize_site(ctx, body.site_url)
    except UnsafeSiteError as exc:
        raise UnsafeSiteUrlError(str(exc)) from None
    tenant_id = principal.tenant_id
    connection = await session.get(CwConnection, tenant_id)
    if connection is None and (body.private_key is None or body.client_id is None):
        raise MissingSecretError()
    if connection is not None and site != connection.site_url and (body.private_key is None or body.client_id is None):
        # The stored keys are only ever sent to the site they were entered for.
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
    return _read(connection)


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


@router.post(
    "/connection/test",
    response_model=ConnectionTestResult,
    summary="Codebase lookup, system info and a permission check for everything the sync needs",
    responses=error_responses(NotAuthenticatedError, NotConnectedError),
)
async def test_cw_connection(principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> ConnectionTestResult:
    client = client_for(ctx, await get_connection(session, principal.tenant_id))
    checks: list[ConnectionCheck] = []
    version = is_cloud = None

    async def codebase() -> str:
        await client.base_url()
        info = client.company_info
        return f"codebase {info.codebase if info else '?'}"

    async def system_info() -> str:
        nonlocal version, is_cloud
        info = await client.system_info()
        version, is_cloud = info.version, info.is_cloud
        return f"ConnectWise {info.version} ({'cloud' if info.is_cloud else 'on-premise'})"

    async def read(path: str, what: str) -> str:
        await client.list_pages(path, page_size=1, limit=1)
        return f"can read {what}"

    agreement_id: int | None = None

    async def read_agreements() -> str:
        nonlocal agreement_id
        rows = await client.list_pages("/finance/agreements", page_size=1, limit=1)
        agreement_id = rows[0]["id"] if rows else None
        return "can read agreements"

    async def add_additions() -> str:
        # A create with a product that cannot exist: CW answers 403 without the permission and 400 with it.
        if agreement_id is None:
            raise CWError("no agreement to check against; create one in ConnectWise first")
        try:
            await client.create_addition(agreement_id, {"product": {"id": 0}, "billCustomer": "Billable"})
        except CWValidationError:
            return "can add agreement additions"
        raise CWError("ConnectWise accepted a probe addition it should have refused; check its validation")

    async def edit_additions() -> str:
        if agreement_id is None:
            raise CWError("no agreement to check against")
        # PATCH of an addition that does not exist: 403 without the permission, 404 with it. Nothing changes.
        try:
            await client.patch_addition(agreement_id, 0, [{"op": "replace", "path": "quantity", "value": 0}])
        except (CWNotFoundError, CWValidationError):
            return "can edit agreement additions"
        raise CWError("ConnectWise reports an addition with id 0; cannot tell whether edits are allowed")

    if await _check("codebase", checks, codebase()) and await _check("system_info", checks, system_info()):
        await _check("read_companies", checks, read("/company/companies", "companies"))
        await _check("read_agreements", checks, read_agreements())
        await _check("read_catalog", checks, read("/procurement/catalog", "the product catalog"))
        await _check("add_additions", checks, add_additions())
        await _check("edit_additions", checks, edit_additions())
    return ConnectionTestResult(ok=all(c.ok for c in checks), version=version, is_cloud=is_cloud, checks=checks)
