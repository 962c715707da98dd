"""The socket layer under our HTTP client: httpcore's network interface on asyncio streams.

HTTP itself stays httpx/httpcore/h11; this only moves bytes. httpcore's default async
backend goes through anyio, and before every request it asks each pooled keep-alive
connection whether its socket has become readable (the server closed it): through anyio
that rebuilds an attribute dict and makes a select() call per connection. With twenty
connections to one service that was a tenth of a worker's CPU on webhook → http_request
runs. Here the answer is the stream's own state, known without a system call, and reads
and writes skip anyio's layers.

`declare_asyncio` saves httpcore the question of which event loop it runs on, asked again
for each lock, event and shield it makes per request, and lets its locks be taken without
a trip through the event loop when no one else holds them.

`ConnectionPool` is httpcore's pool with its bookkeeping pass made linear in the number of
pooled connections; see its docstring.
"""

# ruff: noqa: ASYNC109 (the `timeout` parameters are httpcore's interface)
from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Iterable
from typing import Any

import anyio
import httpcore
import sniffio
from httpcore import AsyncConnectionInterface

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


def declare_asyncio() -> None:
    """Tell sniffio, for this task and the tasks it starts, that the loop is asyncio; and
    make httpcore's locks take the fast path when uncontended.

    httpcore asks sniffio which library runs the loop each time it makes a lock, an event
    or a cancellation shield: several times per request. Undeclared, sniffio finds out by
    importing asyncio and asking for the current task, about 5% of a worker's CPU on
    webhook → http_request runs. `current_async_library_cvar` is sniffio's own way for a
    program to say it.

    Each request takes three of httpcore's locks (the connection's, and the HTTP/1.1
    state lock twice). On asyncio they are anyio locks, which yield to the event loop on
    every acquire, contended or not: a full loop pass each. anyio's `fast_acquire` skips
    that pass when the lock is free (a waiter still waits and is still woken in turn).
    httpcore took this change (encode/httpcore#953), then reverted it for process reasons,
    not technical ones (#1002); pydantic's maintained fork has it again (httpx2#970). A
    worker spent 17% less CPU per HTTP step (0.87 against 1.04 ms, median of three
    alternating).
    """
    sniffio.current_async_library_cvar.set("asyncio")
    # httpcore's private lock class: should a release move it, requests keep working with
    # the slow path (and tests/connectors/test_netio.py says so).
    lock_class = getattr(getattr(httpcore, "_synchronization", None), "AsyncLock", None)
    if lock_class is not None and hasattr(lock_class, "setup"):
        lock_class.setup = _setup_fast_lock


def _setup_fast_lock(self: Any) -> None:
    """httpcore's `AsyncLock.setup` for asyncio, with anyio's fast path."""
    self._backend = "asyncio"
    self._anyio_lock = anyio.Lock(fast_acquire=True)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(1):  # a peer that never answers the TLS close
                await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # An idle keep-alive connection with data or EOF waiting was closed by the
            # server; asyncio's transport has already read either into the reader.
            return (
                self._reader.at_eof()
                or self._reader.exception() is not None
                or bool(getattr(self._reader, "_buffer", b""))
            )
        names = {
            "ssl_object": "ssl_object",
            "client_addr": "sockname",
            "server_addr": "peername",
            "socket": "socket",
        }
        return self._writer.get_extra_info(names[info]) if info in names else None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        opening = asyncio.open_connection(
            host, port, local_addr=(local_address, 0) if local_address else None
        )
        return await _connected(opening, timeout, socket_options)  # TCP_NODELAY: asyncio's

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        opening = asyncio.open_unix_connection(path)
        return await _connected(opening, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    opening: Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    timeout: float | None,
    options: Iterable[SocketOption] | None,
) -> AsyncioStream:
    """Connect within `timeout`, as httpcore's errors; then apply the socket options."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await opening
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock = writer.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)
    return AsyncioStream(reader, writer)


class ConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, with the pass that runs on every request's start and end made
    linear in the number of pooled connections.

    httpcore 1.0's pass counts the pool once per idle connection (`len([... for c in
    self._connections])`, encode/httpcore#1035) and builds two lists over the pool for each
    queued request: with twenty keep-alive connections to one service, 15% of a worker's
    CPU on webhook → http_request runs. This is the same pass with the same outcome, the
    same connections kept, closed and assigned, computed in one walk: the count is kept as
    connections are dropped, and the first usable connection is found lazily. The pass's
    usual outcome, nothing to close, skips the cancellation shield httpcore sets up around
    closing nothing (3% more).
    """

    async def _close_connections(self, closing: list[AsyncConnectionInterface]) -> None:
        if closing:
            await super()._close_connections(closing)

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        closing: list[AsyncConnectionInterface] = []
        kept: list[AsyncConnectionInterface] = []
        remaining = len(self._connections)  # httpcore compares the pool's size, not its idle
        for connection in self._connections:
            if connection.is_closed():
                remaining -= 1
            elif connection.has_expired() or (
                connection.is_idle() and remaining > self._max_keepalive_connections
            ):
                remaining -= 1
                closing.append(connection)
            else:
                kept.append(connection)
        self._connections = kept

        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            chosen = next(
                (c for c in self._connections if c.can_handle_request(origin) and c.is_available()),
                None,
            )
            if chosen is None:
                if len(self._connections) >= self._max_connections:
                    idle = next((c for c in self._connections if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection is released
                    self._connections.remove(idle)  # another origin's: make room
                    closing.append(idle)
                chosen = self.create_connection(origin)
                self._connections.append(chosen)
            pool_request.assign_to_connection(chosen)
        return closing
