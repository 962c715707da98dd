"""Our socket layer and pool under httpx: TLS still verified, keep-alive connections
reused, one the server closed while idle replaced instead of failing the next request, and
the pool's limits kept as httpx states them."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpcore._synchronization import AsyncLock

from levqor.connectors import netio
from levqor.connectors.safety import asyncio_transport
from tests.peers import self_signed


class Server:
    """An HTTP/1.1 server on loopback answering `{}`; counts connections, and hangs up
    on the open ones when told, without a `connection: close` first."""

    def __init__(
        self, *, tls: ssl.SSLContext | None = None, together: asyncio.Barrier | None = None
    ) -> None:
        self.tls = tls
        self.together = together  # answers only once that many requests are waiting
        self.connections = 0
        self.open: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if self.together is not None:
                    await self.together.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def hang_up(self) -> None:
        for writer in self.open:
            writer.close()
            await writer.wait_closed()
        self.open.clear()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def plain() -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    url = await server.start()
    yield server, url
    await server.stop()


async def test_keep_alive_connections_are_reused(plain: tuple[Server, str]) -> None:
    server, url = plain
    async with httpx.AsyncClient(transport=asyncio_transport()) as client:
        answers = [await client.get(url) for _ in range(3)]
    assert [answer.json() for answer in answers] == [{}, {}, {}]
    assert server.connections == 1


async def test_a_connection_the_server_closed_is_replaced(plain: tuple[Server, str]) -> None:
    server, url = plain
    transport = asyncio_transport()
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(url)).status_code == 200
        [connection] = transport._pool.connections
        assert not connection.has_expired()  # idle, open: kept for the next request
        await server.hang_up()
        async with asyncio.timeout(5):  # until the FIN reaches our end of the socket
            while not connection.has_expired():  # noqa: ASYNC110 (a socket, not an Event)
                await asyncio.sleep(0.001)
        second = await client.get(url)
    assert second.status_code == 200  # not "server disconnected"
    assert server.connections == 2


async def test_tls_is_verified_and_works_with_a_trusted_certificate() -> None:
    context, certificate = self_signed("127.0.0.1")
    server = Server(tls=context)
    url = await server.start()
    try:
        async with httpx.AsyncClient(transport=asyncio_transport()) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(url)  # self-signed: refused by default
        trusting = ssl.create_default_context(cadata=certificate.decode())
        async with httpx.AsyncClient(transport=asyncio_transport(trusting)) as client:
            answer = await client.get(url)
    finally:
        await server.stop()
    assert answer.status_code == 200
    assert answer.json() == {}


async def test_connect_errors_and_timeouts_are_httpx_errors() -> None:
    probe = await asyncio.start_server(lambda *_: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with httpx.AsyncClient(transport=asyncio_transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")  # nobody listens there now

    silent: list[Any] = []
    quiet = await asyncio.start_server(lambda r, w: silent.append(w), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{quiet.sockets[0].getsockname()[1]}/"
    try:
        async with httpx.AsyncClient(transport=asyncio_transport(), timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(url)  # accepted, never answered
    finally:
        quiet.close()
        for writer in silent:
            writer.close()


async def test_idle_connections_beyond_the_keep_alive_limit_are_closed() -> None:
    server = Server(together=asyncio.Barrier(5))
    url = await server.start()
    transport = asyncio_transport(limits=httpx.Limits(max_keepalive_connections=2))
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            async with asyncio.timeout(10):
                answers = await asyncio.gather(*(client.get(url) for _ in range(5)))
            assert [answer.status_code for answer in answers] == [200] * 5
            assert server.connections == 5  # five at once: five connections
            assert len(transport._pool.connections) == 2  # three closed as they fell idle
            server.together = None
            again = [await client.get(url) for _ in range(3)]
    finally:
        await server.stop()
    assert [answer.status_code for answer in again] == [200] * 3
    assert server.connections == 5  # the two kept were reused


async def test_requests_beyond_the_connection_limit_wait_for_a_free_connection(
    plain: tuple[Server, str],
) -> None:
    server, url = plain
    transport = asyncio_transport(limits=httpx.Limits(max_connections=2))
    async with httpx.AsyncClient(transport=transport) as client, asyncio.timeout(10):
        answers = await asyncio.gather(*(client.get(url) for _ in range(12)))
    assert [answer.json() for answer in answers] == [{}] * 12
    assert server.connections == 2


async def test_a_full_pool_closes_an_idle_connection_to_reach_another_service() -> None:
    first, second = Server(), Server()
    first_url, second_url = await first.start(), await second.start()
    transport = asyncio_transport(limits=httpx.Limits(max_connections=1))
    try:
        async with httpx.AsyncClient(transport=transport) as client, asyncio.timeout(10):
            statuses = [(await client.get(url)).status_code for url in (first_url, second_url)]
            statuses.append((await client.get(first_url)).status_code)
            assert len(transport._pool.connections) == 1
    finally:
        await first.stop()
        await second.stop()
    assert statuses == [200, 200, 200]
    assert (first.connections, second.connections) == (2, 1)  # the idle one made room


async def test_a_free_httpcore_lock_is_taken_without_a_pass_through_the_loop() -> None:
    netio.declare_asyncio()
    lock, order = AsyncLock(), []

    async def other_task() -> None:
        order.append("other task")

    ready = asyncio.create_task(other_task())  # runs at the loop's next pass
    async with lock:
        order.append("lock taken")
    await ready
    assert order == ["lock taken", "other task"]


async def test_a_held_httpcore_lock_still_makes_others_wait_their_turn() -> None:
    netio.declare_asyncio()
    lock, order = AsyncLock(), []
    release = asyncio.Event()

    async def holder() -> None:
        async with lock:
            order.append("first in")
            await release.wait()
            order.append("first out")

    async def waiter(name: str) -> None:
        async with lock:
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)  # the holder takes the lock
    others = [asyncio.create_task(waiter(name)) for name in ("second", "third")]
    await asyncio.sleep(0)
    assert order == ["first in"]  # both wait while it is held
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(first, *others)
    assert order == ["first in", "first out", "second", "third"]
