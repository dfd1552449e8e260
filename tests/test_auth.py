"""Tokens and tenant isolation: every way a token can be wrong is a 401 with WWW-Authenticate."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from jose import jwt
from pydantic import SecretStr
from sqlalchemy import select, update

from app.context import AppContext
from app.db.models import ApiClient
from app.security.tokens import TokenIssuer
from app.settings import ConfigurationError, Environment, load_settings
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SIGNING_KEY, TenantFactory, bearer

PROBE = "/api/v1/auth/whoami"


def _claims(ctx: AppContext, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ctx.settings.jwt_issuer,
        "aud": ctx.settings.jwt_audience,
        "sub": "cwbs_x",
        "tid": "t",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(claims: dict[str, object]) -> str:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}."


async def test_token_from_form_and_json_gives_access(client: httpx.AsyncClient, make_tenant: TenantFactory) -> None:
    tenant = await make_tenant("Acme")
    form = await client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
        },
    )
    as_json = await client.post(
        "/api/v1/auth/token", json={"client_id": tenant.client_id, "client_secret": tenant.client_secret}
    )
    for response in (form, as_json):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert 0 < body["expires_in"] <= 900
        me = await client.get(PROBE, headers={"Authorization": f"Bearer {body['access_token']}"})
        assert me.status_code == 200
        assert me.json() == {"tenant_id": tenant.tenant_id, "client_id": tenant.client_id}


@pytest.mark.parametrize(
    "body",
    [
        {"client_id": "cwbs_unknown", "client_secret": "x"},
        {"client_id": "<real>", "client_secret": "wrong"},
    ],
)
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, make_tenant: TenantFactory, body: dict[str, str]
) -> None:
    tenant = await make_tenant("Acme")
    body = {k: (tenant.client_id if v == "<real>" else v) for k, v in body.items()}
    response = await client.post("/api/v1/auth/token", data=body)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_client"
    assert response.headers["content-type"] == "application/problem+json"


async def test_malformed_token_requests_are_4xx(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/api/v1/auth/token", data={"grant_type": "password", "client_id": "a", "client_secret": "b"})
    ).status_code == 400
    missing = await client.post("/api/v1/auth/token", json={"client_id": "a"})
    assert missing.status_code == 422
    assert "client_secret" in missing.json()["detail"]
    assert (
        await client.post("/api/v1/auth/token", content=b"{not json", headers={"content-type": "application/json"})
    ).status_code == 422
    assert (
        await client.post("/api/v1/auth/token", content=b"x", headers={"content-type": "text/plain"})
    ).status_code == 422


async def test_revoked_client_loses_access_at_once(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant = await make_tenant("Acme")
    headers = await bearer(client, tenant)
    async with ctx.sessionmaker() as s, s.begin():
        await s.execute(
            update(ApiClient).where(ApiClient.client_id == tenant.client_id).values(revoked_at=datetime.now(UTC))
        )
    assert (await client.get(PROBE, headers=headers)).status_code == 401


def _bad_tokens(ctx: AppContext, tenant_id: str, client_id: str) -> dict[str, str]:
    key = TEST_SIGNING_KEY
    base = {"sub": client_id, "tid": tenant_id}
    now = int(time.time())
    return {
        "alg none": _unsigned(_claims(ctx, **base)),
        "other key": jwt.encode(_claims(ctx, **base), "another-key-" + "k" * 40, algorithm="HS256"),
        "HS512": jwt.encode(_claims(ctx, **base), key, algorithm="HS512"),
        "wrong aud": jwt.encode(_claims(ctx, aud="someone-else", **base), key, algorithm="HS256"),
        "wrong iss": jwt.encode(_claims(ctx, iss="evil", **base), key, algorithm="HS256"),
        "no exp": jwt.encode(_claims(ctx, exp=None, **base), key, algorithm="HS256"),
        "no iat": jwt.encode(_claims(ctx, iat=None, **base), key, algorithm="HS256"),
        "no tid": jwt.encode(_claims(ctx, sub=client_id), key, algorithm="HS256"),
        "no sub": jwt.encode(_claims(ctx, sub=None, tid=tenant_id), key, algorithm="HS256"),
        "expired 31 s ago": jwt.encode(_claims(ctx, iat=now - 400, exp=now - 31, **base), key, algorithm="HS256"),
        "tid of another tenant": jwt.encode(_claims(ctx, sub=client_id, tid="other"), key, algorithm="HS256"),
        "exp 30 years ahead": jwt.encode(_claims(ctx, exp=now + 30 * 365 * 86400, **base), key, algorithm="HS256"),
        "iat in the future": jwt.encode(_claims(ctx, iat=now + 3600, exp=now + 3900, **base), key, algorithm="HS256"),
        "longer than the ttl": jwt.encode(_claims(ctx, iat=now - 10, exp=now + 1200, **base), key, algorithm="HS256"),
        "garbage": "not.a.token",
        "empty": "",
    }


async def test_every_bad_token_is_401(client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext) -> None:
    tenant = await make_tenant("Acme")
    # The probe itself works with a good token built the same way, so each 401 below is about the one defect.
    good = jwt.encode(_claims(ctx, sub=tenant.client_id, tid=tenant.tenant_id), TEST_SIGNING_KEY, algorithm="HS256")
    assert (await client.get(PROBE, headers={"Authorization": f"Bearer {good}"})).status_code == 200
    for name, token in _bad_tokens(ctx, tenant.tenant_id, tenant.client_id).items():
        response = await client.get(PROBE, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert response.headers["content-type"] == "application/problem+json", name
    assert (await client.get(PROBE)).status_code == 401
    assert (await client.get(PROBE, headers={"Authorization": "Basic abc"})).status_code == 401


def test_token_lifetime_is_capped_at_15_minutes() -> None:
    with pytest.raises(ValueError, match="900"):
        load_settings(
            app_env=Environment.production,
            jwt_signing_key=SecretStr(TEST_SIGNING_KEY),
            encryption_keys=[SecretStr(TEST_ENCRYPTION_KEY)],
            token_ttl_seconds=3600,
        )


def test_issued_token_carries_the_required_claims() -> None:
    issuer = TokenIssuer(signing_key=SecretStr(TEST_SIGNING_KEY), issuer="i", audience="a", ttl_seconds=600)
    token, ttl = issuer.issue(subject="c", tenant_id="t", now=datetime(2026, 11, 25, tzinfo=UTC))
    claims = jwt.get_unverified_claims(token)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert {"exp", "iat", "iss", "aud", "sub", "tid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == ttl == 600


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("short-key", "at least 32"),
        ("changeme-changeme-changeme-changeme-1234", "placeholder"),
        ("a" * 64, "placeholder"),
        (None, "JWT_SIGNING_KEY is not set"),
    ],
)
def test_startup_refuses_weak_signing_keys(key: str | None, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(
            app_env=Environment.production,
            jwt_signing_key=SecretStr(key) if key else None,
            encryption_keys=[SecretStr(TEST_ENCRYPTION_KEY)],
        )


def test_startup_refuses_missing_or_bad_encryption_keys() -> None:
    with pytest.raises(ConfigurationError, match="ENCRYPTION_KEYS is not set"):
        load_settings(app_env=Environment.production, jwt_signing_key=SecretStr(TEST_SIGNING_KEY), encryption_keys=[])
    with pytest.raises(ConfigurationError, match="entry 1 is invalid"):
        load_settings(
            app_env=Environment.production,
            jwt_signing_key=SecretStr(TEST_SIGNING_KEY),
            encryption_keys=[SecretStr("dG9vLXNob3J0")],
        )


def test_dev_mode_generates_and_keeps_its_secrets(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    first = load_settings(app_env=Environment.dev, data_dir=tmp_path, jwt_signing_key=None, encryption_keys=[])
    second = load_settings(app_env=Environment.dev, data_dir=tmp_path, jwt_signing_key=None, encryption_keys=[])
    assert first.jwt_signing_key is not None
    assert second.jwt_signing_key is not None
    assert first.jwt_signing_key.get_secret_value() == second.jwt_signing_key.get_secret_value()
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0
    assert TEST_SIGNING_KEY not in repr(first)


async def test_client_secrets_are_stored_hashed(make_tenant: TenantFactory, ctx: AppContext) -> None:
    tenant = await make_tenant("Acme")
    async with ctx.sessionmaker() as s:
        stored = await s.scalar(select(ApiClient.secret_hash).where(ApiClient.client_id == tenant.client_id))
    assert stored is not None
    assert tenant.client_secret not in stored
    assert stored.startswith("sha256$")


def test_expiry_leeway_is_small() -> None:
    issuer = TokenIssuer(signing_key=SecretStr(TEST_SIGNING_KEY), issuer="i", audience="a", ttl_seconds=60)
    token, _ = issuer.issue(subject="c", tenant_id="t", now=datetime.now(UTC) - timedelta(seconds=66))
    with pytest.raises(Exception, match="ExpiredSignature"):
        issuer.verify(token)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # nested deeper than any parser's recursion
        (b'{"client_id": ' + b"9" * 20_000 + b', "client_secret": "x"}', "application/json"),  # a 20,000-digit int
        (b'{"client_id": 1e999999, "client_secret": "x"}', "application/json"),
        (b'{"client_id": "\\ud800", "client_secret": "x"}', "application/json"),  # a lone surrogate
        (b"\xff\xfe", "application/json"),
        (b"client_id=" + b"%" * 5000, "application/x-www-form-urlencoded"),
        (b"--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data; boundary=x"),
    ],
)
async def test_hostile_token_requests_are_4xx_never_500(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    response = await client.post("/api/v1/auth/token", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_rest_bodies_over_one_mib_are_refused_before_they_are_read(client: httpx.AsyncClient) -> None:
    big = b'{"client_id": "' + b"a" * (1024 * 1024) + b'", "client_secret": "x"}'
    declared = await client.post("/api/v1/auth/token", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(40):
            yield b" " * 65536

    chunked = await client.post("/api/v1/auth/token", content=streamed(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert chunked.json()["code"] == "payload_too_large"
