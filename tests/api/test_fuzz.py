"""Hostile requests to the two routes anyone can reach — the token endpoint and the webhook route — never produce a
5xx: hypothesis draws headers and bodies (garbage bytes, deep or huge JSON, odd numbers, control and non-ASCII
characters, wrong content types), and half of the webhook bodies are correctly signed so that the event parser is
attacked too, not only the signature check. Schemathesis covers the documented routes (test_schemathesis.py)."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.security.webhooks import sign
from app.services.tenants import NewTenant
from tests.conftest import TenantFactory

FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)
digits = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text("0123456789²³¹٣۴߄", min_size=1, max_size=40),  # digits str.isdigit() accepts, and ASCII ones
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=False),
        st.text(max_size=40),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["license.count_changed", "company.upserted", "company.deleted", "x"]),
        "data": json_values,
    }
)
bodies = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v).encode()),
    event_like.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=6000).map(lambda n: b'{"license_count": ' + b"9" * n + b"}"),
    st.sampled_from([b'{"a": 1e999999}', b'{"a": "\\ud800"}', b"\xff\xfe\x00", b'{"a": NaN}', b"", b"null"]),
)
content_types = st.one_of(
    st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"]
    ),
    header_text,
)


def _raw(headers: dict[str, str]) -> dict[bytes, bytes]:
    """Headers as bytes on the wire (UTF-8: HTTP carries any octet but controls)."""
    return {name.encode(): value.encode() for name, value in headers.items()}


def _assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> NewTenant:
    return await make_tenant("Fuzz MSP")


@FUZZ
@given(body=bodies, content_type=content_types, extra=st.dictionaries(st.sampled_from(["x-a", "accept"]), header_text))
async def test_the_token_endpoint_answers_anything_without_a_5xx(
    client: httpx.AsyncClient, body: bytes, content_type: str, extra: dict[str, str]
) -> None:
    headers = _raw({"content-type": content_type, **extra})
    response = await client.post("/api/v1/auth/token", content=body, headers=headers)
    _assert_answered(response)


@FUZZ
@given(
    body=bodies,
    signed=st.booleans(),
    webhook_id=header_text,
    timestamp=st.one_of(digits, header_text),
    signature=header_text,
    tenant_path=st.one_of(st.none(), st.text(max_size=70)),
)
async def test_the_webhook_route_answers_anything_without_a_5xx(
    client: httpx.AsyncClient,
    tenant: NewTenant,
    body: bytes,
    signed: bool,
    webhook_id: str,
    timestamp: str,
    signature: str,
    tenant_path: str | None,
) -> None:
    headers: dict[str, str] = {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    if signed and webhook_id:
        stamp = int(time.time())
        headers["webhook-timestamp"] = str(stamp)
        headers["webhook-signature"] = sign(
            secret=tenant.webhook_secret, webhook_id=webhook_id, timestamp=stamp, body=body
        )
    headers["content-type"] = "application/json"
    target = f"/webhooks/portal/{tenant.tenant_id if tenant_path is None else quote(tenant_path, safe='')}"
    response = await client.post(target, content=body, headers=_raw(headers))
    _assert_answered(response)
