"""Secrets at rest: AES-256-GCM, bound to the tenant and the purpose, with key rotation.

A ciphertext is `v1.<key id>.<base64url(nonce || ciphertext+tag)>`. The associated data is
`<tenant id>|<purpose>`, so a value copied into another tenant's row (or another column) fails to decrypt. The
first configured key encrypts; every configured key decrypts, found by its id, so keys rotate by putting a new key
first, running `cw-billing-sync keys rotate` to re-encrypt, and later dropping the old key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """The value was not encrypted for this tenant and purpose, or with any configured key."""


def generate_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def parse_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes, 32 required")
    return raw


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"cwbs-key-id" + key).hexdigest()[:8]


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        parsed = [parse_key(k) for k in keys]
        self._primary_id = _key_id(parsed[0])
        self._keys = {_key_id(k): AESGCM(k) for k in parsed}

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self._keys)})"

    @staticmethod
    def _aad(tenant_id: str, purpose: str) -> bytes:
        return f"{tenant_id}|{purpose}".encode()

    def encrypt(self, plaintext: str, *, tenant_id: str, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._primary_id].encrypt(nonce, plaintext.encode(), self._aad(tenant_id, purpose))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self._primary_id}.{body}"

    def decrypt(self, token: str, *, tenant_id: str, purpose: str) -> str:
        try:
            version, key_id, body = token.split(".", 2)
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, binascii.Error):
            raise DecryptionError("malformed ciphertext") from None
        aead = self._keys.get(key_id)
        if version != _VERSION or aead is None:
            raise DecryptionError("ciphertext was made with a key that is not configured")
        try:
            plain = aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], self._aad(tenant_id, purpose))
        except InvalidTag:
            raise DecryptionError("ciphertext does not belong to this tenant and purpose") from None
        return plain.decode()

    def needs_rotation(self, token: str) -> bool:
        return token.split(".", 2)[1:2] != [self._primary_id]

    def rotate(self, token: str, *, tenant_id: str, purpose: str) -> str:
        """Re-encrypt under the primary key (a no-op for values already under it)."""
        if not self.needs_rotation(token):
            return token
        return self.encrypt(
            self.decrypt(token, tenant_id=tenant_id, purpose=purpose), tenant_id=tenant_id, purpose=purpose
        )
