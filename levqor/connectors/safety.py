"""Outbound safety: user-controlled URLs may not reach private or internal addresses.

`check_url` resolves the host and refuses loopback, private, link-local (cloud metadata
at 169.254.169.254), multicast, reserved and unspecified addresses, IPv4-mapped IPv6
included, unless `LEVQOR_ALLOW_PRIVATE_URLS` names the host or a network holding them.
`GuardedTransport` checks every request and then connects to the address it vetted (the
Host header and TLS SNI keep the name), so a DNS answer that changes between the check
and the connection (rebinding) cannot redirect it. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

from levqor.connectors.errors import ConnectorError
from levqor.connectors.netio import AsyncioBackend, ConnectionPool

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeUrl(ConnectorError):
    """The URL points at an address outbound calls may not reach."""


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower())
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: Address) -> bool:
        return host.lower() in self.hosts or any(address in net for net in self.networks)


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_url(
    url: str | httpx.URL, allow: AllowList, resolve: Resolver = system_resolver
) -> str:
    """The address to connect to for `url`, or UnsafeUrl. Makes no connection."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnsafeUrl(f"only http and https URLs are allowed: {url}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return await check_host(parsed.host, port, allow, resolve)


async def check_host(
    host: str, port: int, allow: AllowList, resolve: Resolver = system_resolver
) -> str:
    """The address to connect to for `host`, or UnsafeUrl (any protocol: SMTP too)."""
    try:
        candidates = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            candidates = [ipaddress.ip_address(a) for a in await resolve(host, port)]
        except OSError as exc:
            raise ConnectorError(f"cannot resolve {host}: {exc}") from exc
    if not candidates:
        raise ConnectorError(f"cannot resolve {host}")
    for address in candidates:  # every answer must be acceptable, not just the first
        if not is_public(address) and not allow.allows(host, address):
            raise UnsafeUrl(
                f"{host} resolves to {address}, a private or internal address; "
                "LEVQOR_ALLOW_PRIVATE_URLS can allow it"
            )
    return str(candidates[0])


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks each request's URL, then connects to the vetted address."""

    def __init__(self, allow: AllowList, resolve: Resolver = system_resolver) -> None:
        self._allow = allow
        self._resolve = resolve
        # Built at the first request: its TLS context reads certifi's roots (30 ms), which
        # a worker whose first jobs make no HTTP call need not wait for.
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        address = await check_url(request.url, self._allow, self._resolve)
        host = request.url.host
        if address != host:
            pinned = address if ":" not in address else f"[{address}]"
            request.url = request.url.copy_with(host=pinned)
            request.headers.setdefault("host", host)
            request.extensions = {**request.extensions, "sni_hostname": host}
        if self._inner is None:
            self._inner = asyncio_transport()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


def asyncio_transport(
    ssl_context: ssl.SSLContext | None = None, limits: httpx.Limits | None = None
) -> httpx.AsyncHTTPTransport:
    """httpx's transport with its defaults (certificates verified against certifi's
    roots unless `ssl_context` says otherwise, httpx's pool limits unless `limits` does),
    over our asyncio socket layer and pool (`netio`)."""
    ssl_context = ssl_context or httpx.create_ssl_context()
    transport = httpx.AsyncHTTPTransport(verify=ssl_context)  # not a second context
    limits = limits or httpx.Limits()
    transport._pool = ConnectionPool(  # httpx takes no pool or backend argument
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


class NoCookies(CookieJar):
    """A cookie jar that keeps nothing. A worker's jobs, every user's, share one client:
    a cookie one user's call received would go out with the next user's call to that
    service. A step that needs a cookie sends it as a header."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def guarded_client(allow_private: Iterable[str]) -> httpx.AsyncClient:
    """The HTTP client for every user-controlled URL (steps, callbacks)."""
    return httpx.AsyncClient(
        transport=GuardedTransport(AllowList.parse(allow_private)),
        follow_redirects=False,
        cookies=NoCookies(),
    )
