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
promises. One load runs at a time and the next gathers; at low load a batch is one
request, which waits at most for the load in flight.

The rhythm is `db.group_commit`'s, but a read is keyed: a key asked for twice is loaded
once and answers both, and a batch is bounded by its distinct keys, not its requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
LoadMany = Callable[[Sequence[K]], Awaitable[Mapping[K, T]]]
MAX_KEYS = 500  # one statement's worth: a flood of requests makes more loads, not a huge one


class BatchReader(Generic[K, T]):
    """Per process. What a load returns for a key is handed to every request that asked
    for it, so it must be immutable (or copied by each). A batch holds at most
    `max_keys` keys; the requests past that gather into the batch after it."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._max_keys = max_keys
        self._keys: dict[K, None] = {}  # the gathering batch's, in arrival order
        self._gathering: asyncio.Task[Mapping[K, T]] | None = None
        self._last: asyncio.Task[Mapping[K, T]] | None = None

    async def read(self, key: K, load_many: LoadMany[K, T]) -> T | None:
        """What the next `load_many` finds for `key` (None if nothing), or what it
        raises; the batch's first request supplies the loader."""
        task = self._gathering
        if task is None or (key not in self._keys and len(self._keys) >= self._max_keys):
            self._keys = {}
            after = self._last
            task = asyncio.get_running_loop().create_task(
                self._load_after(after, self._keys, load_many)
            )
            task.add_done_callback(_retrieve)
            self._gathering = self._last = task
        self._keys[key] = None
        # Shielded: a request that goes away leaves the load to the others.
        return (await asyncio.shield(task)).get(key)

    async def _load_after(
        self,
        previous: asyncio.Task[Mapping[K, T]] | None,
        keys: dict[K, None],
        load_many: LoadMany[K, T],
    ) -> Mapping[K, T]:
        this = asyncio.current_task()
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
        finally:
            # From here on, a request that arrives waits for the next load.
            if self._gathering is this:
                self._gathering = None
        return await load_many(list(keys))

    @property
    def idle(self) -> bool:
        """No load running or gathering: true again once every request is answered."""
        return self._last is None or self._last.done()


def _retrieve(task: asyncio.Task[Mapping[K, T]]) -> None:
    """Every request of a load may have gone: its error was theirs, not the log's."""
    if not task.cancelled():
        task.exception()
