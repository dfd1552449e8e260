"""API client and webhook credentials: generation and the one-way hash of client secrets.

Client secrets are 256-bit random values, so a salted SHA-256 is enough (a slow password hash protects guessable
secrets, which these are not) and keeps the token endpoint fast. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

CLIENT_ID_PREFIX = "cwbs_"
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a label, not a secret)


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_hex(12)


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_client_secret(secret: str, *, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(16)
    digest = hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()
    return f"sha256${salt}${digest}"


def verify_client_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt, _ = stored.split("$", 2)
    except ValueError:
        return False
    if scheme != "sha256":
        return False
    return hmac.compare_digest(hash_client_secret(secret, salt=salt), stored)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
