"""`/api/v1/connectwise/connection`: connect, read (never the secrets), test."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ContextDep, PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.errors import NotAuthenticatedError
from app.schemas.setup import ConnectionRead, ConnectionTestResult, ConnectionUpdate
from app.services.cw_connections import (
    MissingSecretError,
    NotConnectedError,
    UnsafeSiteUrlError,
    check_and_requeue,
    connection_view,
    get_connection,
    save_connection,
)

router = APIRouter(prefix="/api/v1/connectwise", tags=["connectwise"])


@router.get(
    "/connection",
    response_model=ConnectionRead,
    summary="The ConnectWise connection (secrets omitted)",
    responses=error_responses(NotAuthenticatedError, NotConnectedError),
)
async def get_cw_connection(principal: PrincipalDep, session: SessionDep) -> ConnectionRead:
    """The ConnectWise connection: site, login company and public key. The private key and clientId are never returned,
    only whether they are set."""
    return connection_view(await get_connection(session, principal.tenant_id))


@router.put(
    "/connection",
    response_model=ConnectionRead,
    summary="Connect (or reconnect) ConnectWise",
    responses=error_responses(NotAuthenticatedError, UnsafeSiteUrlError, MissingSecretError),
)
async def put_cw_connection(
    body: ConnectionUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> ConnectionRead:
    """Connect or reconnect ConnectWise. The keys are stored encrypted. A site that is not public https is refused (422
    `unsafe_site_url`); a new site needs the private key and clientId again (422 `missing_secret`), so stored keys
    never reach another host."""
    return await save_connection(session, ctx, principal, body)


@router.post(
    "/connection/test",
    response_model=ConnectionTestResult,
    summary="Codebase lookup, system info and a permission check for everything the sync needs",
    description="Changes nothing in ConnectWise. When every check passes, companies whose sync failed or keeps "
    "retrying are queued again at once (`requeued`).",
    responses=error_responses(NotAuthenticatedError, NotConnectedError),
)
async def test_cw_connection(principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> ConnectionTestResult:
    return await check_and_requeue(session, ctx, principal.tenant_id, now=ctx.now())
