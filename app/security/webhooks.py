"""Standard Webhooks signatures (https://www.standardwebhooks.com), verified on the raw body.

Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; the signature header holds one or more
space-separated `v1,<base64 HMAC-SHA256>` entries (several during secret rotation); secrets are `whsec_<base64>`.
Every failure is a `SignatureError` — a malformed header never escapes as anything else.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

TOLERANCE = timedelta(minutes=5)
_MAX_ID = 200


class SignatureError(Exception):
    """The delivery cannot be trusted. The message names the reason, never a secret."""


class NoMatchingSignatureError(SignatureError):
    """Well-formed and fresh, but signed with none of the given secrets."""


@functools.lru_cache(maxsize=256)  # a handful of secrets per tenant, decoded once
def _secret_bytes(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("secret is not base64") from None


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.digest(_secret_bytes(secret), f"{webhook_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(digest).decode()


def verify(
    *,
    secrets: Sequence[str],
    webhook_id: str | None,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    now: datetime | None = None,
) -> datetime:
    """Return the delivery's timestamp if one of the signatures matches one of the secrets."""
    if not webhook_id or not timestamp or not signature_header:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(webhook_id) > _MAX_ID or not webhook_id.isprintable():
        raise SignatureError("malformed webhook-id")
    # ASCII digits only (str.isdigit() also takes "²"), compared as seconds before any datetime is made of them.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError("malformed webhook-timestamp")
    now = now or datetime.now(UTC)
    seconds = int(timestamp)
    if seconds < now.timestamp() - TOLERANCE.total_seconds():
        raise SignatureError("webhook-timestamp is too old")
    if seconds > now.timestamp() + TOLERANCE.total_seconds():
        raise SignatureError("webhook-timestamp is in the future")
    sent_at = datetime.fromtimestamp(seconds, UTC)
    offered = []
    for entry in signature_header.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and value:
            try:
                offered.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
    if not offered:
        raise SignatureError("no v1 signature in webhook-signature")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    for secret in secrets:
        expected = hmac.digest(_secret_bytes(secret), signed, "sha256")  # one-shot: no HMAC object per delivery
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return sent_at
    raise NoMatchingSignatureError("no signature matches")


@dataclass(frozen=True, slots=True)
class SignedParts:
    """What a signature covers, kept to check it again after a rotation."""

    webhook_id: str | None
    timestamp: str | None
    signature: str | None
    body: bytes

    def check(self, secrets: list[str]) -> None:
        verify(
            secrets=secrets,
            webhook_id=self.webhook_id,
            timestamp=self.timestamp,
            signature_header=self.signature,
            body=self.body,
        )
