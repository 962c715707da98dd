"""Concurrent reads of the same thing, done once for every request that waits on it.

An authenticated GET's largest cost is loading its caller (the user's row with the
revocation check): under 50 connections on PostgreSQL + Redis it was over a third of
the CPU of `GET /api/v1/me`. A client polling with many connections at once, the busiest
kind of reader, sends the same credential on all of them; its requests that wait
together now share one read (docs/sizing.md has the figures).

This stays exact: a request joins only a read that has not started yet, so every answer
comes from a read begun after its request arrived. A key deleted or a login revoked
before a request arrived is refused, whichever process made the change, as the API
promises. At most one read per key runs at a time and one more waits for it, gathering
the requests that arrive meanwhile. Distinct callers gain nothing and lose nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadCoalescer(Generic[T]):
    """Per process; what a read returns is handed to every request that joined it, so
    it must be immutable (or copied by each)."""

    def __init__(self) -> None:
        self._gathering: dict[Hashable, asyncio.Task[T]] = {}
        self._reading: dict[Hashable, asyncio.Task[T]] = {}

    async def read(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """What `load` returns (or raises), from a call begun after this one."""
        task = self._gathering.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read_after(key, load))
            task.add_done_callback(_retrieve)
            self._gathering[key] = task
        # Shielded: a request that goes away leaves the read to the others.
        return await asyncio.shield(task)

    async def _read_after(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        this = asyncio.current_task()
        try:
            if (previous := self._reading.get(key)) is not None:
                await asyncio.wait([previous])
        finally:
            # From here on, a request that arrives waits for the next read.
            if self._gathering.get(key) is this:
                del self._gathering[key]
        self._reading[key] = this  # type: ignore[assignment]
        try:
            return await load()
        finally:
            del self._reading[key]

    def __len__(self) -> int:
        """Reads running or gathering: none once every request is answered."""
        return len(self._gathering) + len(self._reading)


def _retrieve(task: asyncio.Task[T]) -> None:
    """Every request of a read may have gone: its error was theirs, not the log's."""
    if not task.cancelled():
        task.exception()
