"""Access tokens. The only module that imports python-jose.

One algorithm (HS256), pinned on both sides; every token must carry `exp iat iss aud sub tid`; the header's `alg`
is checked before the library sees the token, so `none` or an asymmetric algorithm never reaches a verifier. A token
is also refused when it was issued in the future or lives longer than this server issues tokens for (a token minted
with the real key and `exp` years ahead).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jose import JWTError, jwt
from pydantic import SecretStr

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "tid")
LEEWAY_SECONDS = 5


class InvalidTokenError(Exception):
    """The token cannot be trusted. The message is safe to log; it never contains the token."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str  # the API client id
    tenant_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    signing_key: SecretStr  # never in a repr, a log line or a traceback
    issuer: str
    audience: str
    ttl_seconds: int

    def issue(self, *, subject: str, tenant_id: str, now: datetime | None = None) -> tuple[str, int]:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "tid": tenant_id,
            "iat": int(issued.timestamp()),
            "exp": int((issued + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.signing_key.get_secret_value(), algorithm=ALGORITHM), self.ttl_seconds

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except JWTError:
            raise InvalidTokenError("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError("unexpected token algorithm")
        try:
            claims = jwt.decode(
                token,
                self.signing_key.get_secret_value(),
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require_exp": True,
                    "require_iat": True,
                    "require_iss": True,
                    "require_aud": True,
                    "require_sub": True,
                    "leeway": LEEWAY_SECONDS,
                },
            )
        except JWTError as exc:
            raise InvalidTokenError(f"token rejected: {type(exc).__name__}") from None
        issued, expires = claims.get("iat"), claims.get("exp")
        if not isinstance(issued, int) or not isinstance(expires, int):
            raise InvalidTokenError("token times are not integers")
        now = int(time.time())
        if issued > now + LEEWAY_SECONDS:
            raise InvalidTokenError("token issued in the future")
        if expires - issued > self.ttl_seconds or expires > now + self.ttl_seconds + LEEWAY_SECONDS:
            raise InvalidTokenError("token lives longer than this server issues tokens for")
        tenant_id = claims.get("tid")
        subject = claims.get("sub")
        if not isinstance(tenant_id, str) or not tenant_id or not isinstance(subject, str) or not subject:
            raise InvalidTokenError("token lacks a tenant or subject")
        return TokenClaims(subject=subject, tenant_id=tenant_id, expires_at=datetime.fromtimestamp(claims["exp"], UTC))
