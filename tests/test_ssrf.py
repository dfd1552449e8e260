"""The CW site URL guard: every unsafe form is refused before anything connects."""

from __future__ import annotations

import httpx
import pytest

from app.security.ssrf import UnsafeSiteError, check_site_url
from tests.conftest import TenantFactory, bearer

RESOLVED = {
    "na.myconnectwise.net": ["52.1.2.3"],
    "internal.example.com": ["10.0.0.5"],
    "mixed.example.com": ["52.1.2.3", "127.0.0.1"],
    "v6.example.com": ["::ffff:192.168.1.1"],
}
resolved_hosts: list[str] = []


async def fake_resolver(host: str) -> list[str]:
    resolved_hosts.append(host)
    return RESOLVED.get(host, [])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://na.myconnectwise.net", "https"),
        ("https://127.0.0.1", "non-public"),
        ("https://[::1]", "non-public"),
        ("https://169.254.169.254", "non-public"),
        ("https://0x7f000001", "non-public"),
        ("https://2130706433", "non-public"),
        ("https://0177.0.0.1", "non-public"),
        ("https://127.1", "non-public"),
        ("https://[::ffff:127.0.0.1]", "non-public"),
        ("https://user@na.myconnectwise.net", "credentials"),
        ("https://user:pw@na.myconnectwise.net", "credentials"),
        ("https://na.myconnectwise.net:8443", "443"),
        ("https://internal.example.com", "non-public"),
        ("https://mixed.example.com", "non-public"),
        ("https://v6.example.com", "non-public"),
        ("https://nowhere.example.com", "does not resolve"),
        ("https://na.myconnectwise.net/v4_6_release/apis", "only the site"),
        ("ftp://na.myconnectwise.net", "https"),
        ("not a url", "no host"),
    ],
)
async def test_unsafe_sites_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeSiteError, match=reason):
        await check_site_url(url, resolver=fake_resolver)


async def test_ip_literals_are_judged_without_resolving() -> None:
    resolved_hosts.clear()
    with pytest.raises(UnsafeSiteError):
        await check_site_url("https://2130706433", resolver=fake_resolver)
    assert resolved_hosts == []


async def test_a_public_site_is_normalized() -> None:
    assert (
        await check_site_url("https://NA.MyConnectWise.net/", resolver=fake_resolver) == "https://na.myconnectwise.net"
    )
    assert (
        await check_site_url("https://na.myconnectwise.net:443", resolver=fake_resolver)
        == "https://na.myconnectwise.net"
    )


async def test_loopback_only_in_the_explicit_dev_mode() -> None:
    assert (
        await check_site_url("http://127.0.0.1:8090", allow_private=True, resolver=fake_resolver)
        == "http://127.0.0.1:8090"
    )
    with pytest.raises(UnsafeSiteError):
        await check_site_url("http://127.0.0.1:8090", resolver=fake_resolver)


async def test_the_api_refuses_unsafe_sites_with_a_reason(
    client: httpx.AsyncClient, make_tenant: TenantFactory
) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    for url in ("https://127.0.0.1", "https://0x7f000001", "http://example.com", "https://u@example.com"):
        response = await client.put(
            "/api/v1/connectwise/connection",
            headers=headers,
            json={"site_url": url, "company_id": "x", "public_key": "p", "private_key": "k", "client_id": "c"},
        )
        assert response.status_code == 422, url
        assert response.json()["code"] == "unsafe_site_url"
    missing = await client.get("/api/v1/connectwise/connection", headers=headers)
    assert missing.status_code == 409  # nothing was saved
