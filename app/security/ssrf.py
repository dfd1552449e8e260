"""SSRF guard for the ConnectWise site URL an MSP enters.

Production: `https://host` only — no userinfo, port 443 (or none), no path tricks, and the host (any IPv4 spelling
`inet_aton` accepts: decimal `2130706433`, hex `0x7f000001`, octal, short forms; any IPv6 form) and every address it
resolves to must be public. Nothing connects before the check passes; the CW client never follows redirects.
Sites answered by a transport mounted at start-up (`trusted_hosts`) pass as they are: they are never resolved or
connected to. Dev (CW_ALLOW_PRIVATE_SITES): http and loopback/private addresses too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

Resolver = Callable[[str], Awaitable[list[str]]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeSiteError(ValueError):
    """The URL may not be used as a ConnectWise site. The message says why."""


async def system_resolver(host: str) -> list[str]:
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UnsafeSiteError(f"{host} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


def _literal_address(host: str) -> IpAddress | None:
    """The address if `host` is an IP literal in any spelling, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host)  # accepts 2130706433, 0x7f000001, 0177.0.0.1, 127.1, …
    except OSError:
        return None
    return ipaddress.IPv4Address(packed)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4 address
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use translation, never public
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through a translation or tunnel: mapped, IPv4-compatible, NAT64,
    6to4, Teredo."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def is_public(address: IpAddress) -> bool:
    """Whether connecting to `address` reaches the public internet only (and no address behind a translation)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(address)
        if embedded:
            return all(is_public(v4) for v4 in embedded)
    return address.is_global and not address.is_multicast


async def check_site_url(
    url: str,
    *,
    allow_private: bool = False,
    trusted_hosts: frozenset[str] = frozenset(),
    resolver: Resolver = system_resolver,
) -> str:
    """Validate and normalize to `scheme://host[:port]`; raise `UnsafeSiteError` with the reason."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UnsafeSiteError("not a valid URL") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeSiteError("the URL has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeSiteError("credentials in the URL are not allowed")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UnsafeSiteError("give only the site, e.g. https://na.myconnectwise.net")
    if f"{parts.scheme}://{host}" in trusted_hosts and port is None:
        return f"{parts.scheme}://{host}"
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise UnsafeSiteError("the site must use https")
    if port not in (None, 443) and not allow_private:
        raise UnsafeSiteError("only the standard https port (443) is allowed")
    literal = _literal_address(host)
    addresses = [literal] if literal is not None else [ipaddress.ip_address(a) for a in await resolver(host)]
    if not addresses:
        raise UnsafeSiteError(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise UnsafeSiteError(f"{host} resolves to a non-public address ({address})")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port not in (None, 443) else "")


async def resolve_public(host: str, port: int, *, allow_private: bool, resolver: Resolver | None = None) -> list[str]:
    """The addresses to connect to for `host`, every one of them checked (at connect time, so a name that resolves
    elsewhere since it was saved — DNS rebinding — is caught). Raises `UnsafeSiteError`."""
    literal = _literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        names = await (resolver or system_resolver)(host)
        addresses = [ipaddress.ip_address(a) for a in names]
    if not addresses:
        raise UnsafeSiteError(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise UnsafeSiteError(f"{host} resolves to a non-public address ({address})")
    return [str(a) for a in addresses]
