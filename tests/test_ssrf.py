"""The CW site URL guard: every unsafe form is refused before anything connects."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpcore
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app.connectwise.client import ConnectWiseClient, CWCredentials
from app.connectwise.errors import CWConfigurationError, CWError
from app.connectwise.network import guarded_client
from app.context import AppContext
from app.main import create_app
from app.security.ssrf import UnsafeSiteError, check_site_url
from app.services.tenants import create_tenant
from app.settings import Environment, Settings
from tests.api.setup_helpers import CONNECTION, connect
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
        ("https://[64:ff9b::7f00:1]", "non-public"),  # NAT64 of 127.0.0.1
        ("https://[64:ff9b::a9fe:a9fe]", "non-public"),  # NAT64 of 169.254.169.254
        ("https://[64:ff9b:1::3401:203]", "non-public"),  # local-use NAT64 prefix
        ("https://[2002:7f00:1::]", "non-public"),  # 6to4 of 127.0.0.1
        ("https://[2002:a00:5::1]", "non-public"),  # 6to4 of 10.0.0.5
        ("https://[::127.0.0.1]", "non-public"),  # IPv4-compatible
        ("https://[::a00:5]", "non-public"),  # IPv4-compatible 10.0.0.5
        ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]", "non-public"),  # Teredo to 127.0.0.1
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


async def test_public_addresses_behind_translations_stay_allowed() -> None:
    for literal in ("[64:ff9b::3401:203]", "[2002:3401:203::1]", "[2606:4700::1111]"):  # 52.1.2.3 via NAT64, 6to4
        assert await check_site_url(f"https://{literal}", resolver=fake_resolver) == f"https://{literal}"


# ---------------------------------------------------------------------------------------------------- connect time
class Listener:
    """A plain TCP listener on loopback that records what arrives and answers like a CW codebase lookup, then 401."""

    def __init__(self, *, cloud: bool = False) -> None:
        self.cloud = cloud
        self.received = b""
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += head
                if b"/login/companyinfo/" in head:
                    cloud = b"true" if self.cloud else b"false"
                    body = b'{"CompanyName":"x","Codebase":"v2025_1/","VersionCode":"v2025.1","IsCloud":' + cloud + b"}"
                    status = b"200 OK"
                else:
                    body = b'{"internal":"secret-of-the-intranet","message":"intranet says hi"}'
                    status = b"401 Unauthorized"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def _client(http: httpx.AsyncClient, site: str, private_key: str = "the-private-key") -> ConnectWiseClient:
    credentials = CWCredentials(
        site_url=site,
        company_id="acme",
        public_key="pub",
        private_key=SecretStr(private_key),
        client_id=SecretStr("the-client-id"),
    )
    return ConnectWiseClient(http, credentials, attempts=1)


async def test_every_connection_is_checked_and_pinned_when_it_is_made() -> None:
    async with Listener() as listener:
        names = {"cw.example.test": ["127.0.0.1"]}  # no such name in DNS: only the pinned address reaches it

        async def resolver(host: str) -> list[str]:
            return names.get(host, [])

        site = f"http://cw.example.test:{listener.port}"
        guarded = guarded_client(allow_private=False, timeout=httpx.Timeout(5), resolver=resolver)
        async with guarded:
            with pytest.raises(CWConfigurationError, match="non-public"):
                await _client(guarded, site).system_info()
        assert listener.received == b""  # refused before anything was sent
        allowed = guarded_client(allow_private=True, timeout=httpx.Timeout(5), resolver=resolver)
        async with allowed:  # the explicit dev mode: the same name reaches the listener through the pinned address
            with pytest.raises(CWError):
                await _client(allowed, site).system_info()
        assert b"GET /login/companyinfo/acme" in listener.received


async def test_a_name_rebound_to_an_internal_address_after_saving_is_refused() -> None:
    answers = iter([["52.1.2.3"], ["127.0.0.1"]])

    async def rebinding(host: str) -> list[str]:
        return next(answers)

    assert await check_site_url("https://cw.rebind.test", resolver=rebinding) == "https://cw.rebind.test"
    async with guarded_client(allow_private=False, timeout=httpx.Timeout(5), resolver=rebinding) as http:
        with pytest.raises(CWConfigurationError, match="non-public"):
            await _client(http, "https://cw.rebind.test").system_info()


class PublicAddressOnLoopback(httpcore.AsyncNetworkBackend):
    """The network, except that one public test address (52.1.2.3) is this machine's listener."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected: list[str] = []
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        assert host == "52.1.2.3", host
        return await self.inner.connect_tcp("127.0.0.1", self.port, *args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_the_api_host_cw_points_to_is_checked_too() -> None:
    async with Listener(cloud=True) as listener:
        names = {"cw.example.test": ["52.1.2.3"], "api-cw.example.test": ["10.1.2.3"]}

        async def resolver(host: str) -> list[str]:
            return names.get(host, [])

        network = PublicAddressOnLoopback(listener.port)
        guarded = guarded_client(allow_private=False, timeout=httpx.Timeout(5), resolver=resolver, network=network)
        async with guarded:
            # The codebase lookup (on the public site) says "cloud": the API calls go to api-<site>, which resolves
            # to a private address and is refused.
            with pytest.raises(CWConfigurationError, match=r"api-cw\.example\.test resolves to a non-public address"):
                await _client(guarded, f"http://cw.example.test:{listener.port}").system_info()
    assert network.connected == ["52.1.2.3"]
    assert b"Authorization" not in listener.received


async def test_what_a_foreign_host_answers_is_not_echoed() -> None:
    async with Listener() as listener:

        async def resolver(host: str) -> list[str]:
            return ["127.0.0.1"]

        async with guarded_client(allow_private=True, timeout=httpx.Timeout(5), resolver=resolver) as http:
            with pytest.raises(CWError) as caught:
                await _client(http, f"http://cw.example.test:{listener.port}").system_info()
    assert "intranet" not in caught.value.describe()
    assert caught.value.describe() == "ConnectWise answered HTTP 401"


async def test_changing_the_site_needs_the_secrets_again_and_the_old_key_never_leaves(
    settings: Settings, engine: AsyncEngine
) -> None:
    dev = settings.model_copy(update={"app_env": Environment.dev, "cw_allow_private_sites": True})
    application = create_app(dev, engine=engine)
    ctx: AppContext = application.state.ctx
    async with (
        Listener() as listener,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test") as client,
    ):
        async with ctx.sessionmaker() as session, session.begin():
            tenant = await create_tenant(session, box=ctx.secrets, name="Acme")
        headers = await bearer(client, tenant)
        await connect(client, headers)  # the sandbox, with its private key and clientId
        moved = {k: v for k, v in CONNECTION.items() if k not in ("private_key", "client_id")}
        moved["site_url"] = f"http://127.0.0.1:{listener.port}"
        refused = await client.put("/api/v1/connectwise/connection", json=moved, headers=headers)
        assert refused.status_code == 422
        assert refused.json()["code"] == "missing_secret"
        kept = (await client.get("/api/v1/connectwise/connection", headers=headers)).json()
        assert kept["site_url"] == CONNECTION["site_url"]
        assert (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()["ok"] is True
        assert listener.received == b""  # the stored keys went to the sandbox only
        fresh = {**moved, "private_key": "the-listeners-own-key", "client_id": "another-client-id"}
        assert (await client.put("/api/v1/connectwise/connection", json=fresh, headers=headers)).status_code == 200
        assert (await client.post("/api/v1/connectwise/connection/test", headers=headers)).json()["ok"] is False
    await ctx.aclose()
    received = listener.received.decode("latin-1")
    old = base64.b64encode(f"sandbox+sandbox-public:{CONNECTION['private_key']}".encode()).decode()
    new = base64.b64encode(b"sandbox+sandbox-public:the-listeners-own-key").decode()
    assert new in received  # the listener was reached, with the keys entered for it
    assert old not in received
    assert CONNECTION["client_id"] not in received
