"""Request dependencies as `Annotated` aliases: the context, one DB transaction per request, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.db.repositories.clients import api_client
from app.domain.events import COMPANY_ID_PATTERN
from app.errors import NotAuthenticatedError
from app.security.principal import Principal
from app.security.tokens import InvalidTokenError


async def get_context(request: Request) -> AppContext:  # async: a plain def would run in a worker thread
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_session(ctx: ContextDep, request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent (see `scope="function"`). GET and HEAD
    requests read in a read-only session (on SQLite: a deferred transaction, which does not wait for writers)."""
    maker = ctx.read_sessionmaker if request.method in ("GET", "HEAD") else ctx.sessionmaker
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

CompanyPath = Annotated[
    str,
    Path(pattern=COMPANY_ID_PATTERN, description="The portal's company id: 1–128 of A–Z a–z 0–9 . _ ~ : @ -"),
]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/token")


async def get_principal(
    ctx: ContextDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticatedError("A bearer token is required")
    try:
        claims = ctx.tokens.verify(credentials.credentials)
    except InvalidTokenError as exc:
        raise NotAuthenticatedError(str(exc)) from None
    # The client must still exist, belong to the token's tenant and not be revoked: revocation is immediate.
    client = await api_client(session, claims.subject, tenant_id=claims.tenant_id)
    if client is None or client.revoked_at is not None:
        raise NotAuthenticatedError("The client behind this token is no longer active")
    structlog.contextvars.bind_contextvars(tenant_id=claims.tenant_id)
    return Principal(tenant_id=claims.tenant_id, client_id=claims.subject)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
