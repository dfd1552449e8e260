"""The HTTP client that reaches real ConnectWise sites, guarded against SSRF at connect time.

Every TCP connection — to the site an MSP entered and to the `api-` host CW's codebase lookup points at — resolves
the host, checks every address it resolves to (`app/security/ssrf.py`: public only, no loopback, private, link-local,
NAT64, 6to4, Teredo or IPv4-compatible forms) and connects to a checked address, so a name that resolved to a
public address when it was saved cannot be pointed at an internal one afterwards (DNS rebinding). TLS still verifies
the certificate against the host name. Redirects are never followed.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping

import httpcore
import httpx

from app.security.ssrf import Resolver, resolve_public


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses."""

    def __init__(
        self, inner: httpcore.AsyncNetworkBackend, *, allow_private: bool, resolver: Resolver | None = None
    ) -> None:
        self._inner = inner
        self._allow_private = allow_private
        self._resolver = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_public(host, port, allow_private=self._allow_private, resolver=self._resolver)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:  # the next address, as a resolver-driven connect would
                failure = exc
        assert failure is not None  # noqa: S101 (resolve_public returns at least one address)
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not ConnectWise sites")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(
    *,
    allow_private: bool,
    timeout: httpx.Timeout,
    resolver: Resolver | None = None,
    network: httpcore.AsyncNetworkBackend | None = None,
    mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through `GuardedBackend` (over `network`, httpcore's own by
    default); no proxies from the environment, no redirects. `mounts` maps a site (`https://host`) to a transport
    that answers for it instead of the network."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx offers no other way to give httpcore a network backend; tests/test_ssrf.py proves this one is used.
    pool = transport._pool
    pool._network_backend = GuardedBackend(
        network or pool._network_backend, allow_private=allow_private, resolver=resolver
    )
    return httpx.AsyncClient(
        transport=transport,
        mounts=dict(mounts or {}),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
