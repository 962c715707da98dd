"""Reads that wait together, done together: the callers of an API process's read requests.

An authenticated GET's largest cost was loading its caller (the user's row with the
revocation check): over a third of the CPU of `GET /api/v1/me` under 50 connections on
PostgreSQL + Redis. The requests that arrive while one load is running now wait for the
next, which loads all their callers in one statement (on PostgreSQL; one statement each on
SQLite, on one connection), and a credential sent on several of them is looked up once.
docs/sizing.md has the figures.

This stays exact: a request joins only a load that has not started yet, so every answer
comes from a read begun after its request arrived. A key deleted or a login revoked
before a request arrived is refused, whichever process made the change, as the API
promises. One load runs at a time and one more gathers; at low load a batch is one
request, which waits at most for the load in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
LoadMany = Callable[[Sequence[K]], Awaitable[Mapping[K, T]]]


class BatchReader(Generic[K, T]):
    """Per process. What a load returns for a key is handed to every request that asked
    for it, so it must be immutable (or copied by each)."""

    def __init__(self) -> None:
        self._keys: dict[K, None] = {}  # the gathering batch's, in arrival order
        self._gathering: asyncio.Task[Mapping[K, T]] | None = None
        self._loading: asyncio.Task[Mapping[K, T]] | None = None

    async def read(self, key: K, load_many: LoadMany[K, T]) -> T | None:
        """What the next `load_many` finds for `key` (None if nothing), or what it
        raises; the batch's first request supplies the loader."""
        task = self._gathering
        if task is None:
            self._keys = {}
            task = asyncio.get_running_loop().create_task(self._load_after(self._keys, load_many))
            task.add_done_callback(_retrieve)
            self._gathering = task
        self._keys[key] = None
        # Shielded: a request that goes away leaves the load to the others.
        return (await asyncio.shield(task)).get(key)

    async def _load_after(self, keys: dict[K, None], load_many: LoadMany[K, T]) -> Mapping[K, T]:
        this = asyncio.current_task()
        try:
            if self._loading is not None:
                await asyncio.wait([self._loading])
        finally:
            # From here on, a request that arrives waits for the next load.
            if self._gathering is this:
                self._gathering = None
        self._loading = this
        try:
            return await load_many(list(keys))
        finally:
            self._loading = None

    @property
    def idle(self) -> bool:
        """No load running or gathering: true again once every request is answered."""
        return self._gathering is None and self._loading is None


def _retrieve(task: asyncio.Task[Mapping[K, T]]) -> None:
    """Every request of a load may have gone: its error was theirs, not the log's."""
    if not task.cancelled():
        task.exception()
