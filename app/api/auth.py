"""OAuth2 client-credentials token endpoint (form or JSON body)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from app.api.deps import ContextDep, PrincipalDep, SessionDep
from app.api.problems import error_responses
from app.db.repositories.clients import api_client
from app.errors import (
    InvalidClientError,
    NotAuthenticatedError,
    UnprocessableError,
    UnsupportedGrantTypeError,
)
from app.schemas.auth import TokenRead, TokenRequest
from app.security.credentials import verify_client_secret

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

_FORM = "application/x-www-form-urlencoded"
_body_schema = TokenRequest.model_json_schema()


class InvalidTokenRequestError(UnprocessableError):
    code = "invalid_request"
    title = "Malformed token request"


async def _read_token_request(request: Request) -> TokenRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: Any
    try:
        if content_type == "application/json":
            # orjson: nesting deeper than 1,024 levels and integers beyond 64 bits are decode errors, not crashes.
            raw = orjson.loads(await request.body() or b"null")
        elif content_type in (_FORM, "multipart/form-data"):
            form = await request.form()
            raw = {k: v for k, v in form.items() if isinstance(v, str)}
        else:
            raise InvalidTokenRequestError("Send client_id and client_secret as a form or as JSON")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        raise InvalidTokenRequestError("The body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise InvalidTokenRequestError("The body must be an object with client_id and client_secret")
    if raw.get("grant_type", "client_credentials") != "client_credentials":
        raise UnsupportedGrantTypeError()
    try:
        return TokenRequest.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise InvalidTokenRequestError(f"Missing or invalid: {', '.join(fields)}") from None


@router.post(
    "/token",
    response_model=TokenRead,
    summary="Exchange client credentials for an access token",
    responses=error_responses(InvalidClientError, UnsupportedGrantTypeError, InvalidTokenRequestError),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {_FORM: {"schema": _body_schema}, "application/json": {"schema": _body_schema}},
        }
    },
)
async def issue_token(request: Request, ctx: ContextDep, session: SessionDep) -> TokenRead:
    """Exchange an API client's id and secret (OAuth2 client credentials, as a form or JSON) for a bearer token valid
    10 minutes. A revoked client or a wrong secret is 401 `invalid_client`."""
    body = await _read_token_request(request)
    client = await api_client(session, body.client_id)
    if (
        client is None
        or client.revoked_at is not None
        or not verify_client_secret(body.client_secret, client.secret_hash)
    ):
        raise InvalidClientError()
    token, expires_in = ctx.tokens.issue(subject=client.client_id, tenant_id=client.tenant_id)
    return TokenRead(access_token=token, expires_in=expires_in)


class WhoAmI(BaseModel):
    tenant_id: str
    client_id: str


@router.get(
    "/whoami",
    response_model=WhoAmI,
    summary="The tenant and client behind the access token",
    responses=error_responses(NotAuthenticatedError),
)
async def whoami(principal: PrincipalDep) -> WhoAmI:
    """The tenant and API client the bearer token belongs to: a quick check that a token works."""
    return WhoAmI(tenant_id=principal.tenant_id, client_id=principal.client_id)
