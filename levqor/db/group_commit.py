"""Group commit: what is submitted while a commit is in flight goes together in the next.

At low load each item commits on its own, with no added wait; under load one transaction
carries many, which is what lets a worker finish thousands of short jobs a second, or
SQLite take dozens of webhooks in one turn at its write lock. When a group's commit
fails, each of its items is committed alone, so only a bad one (another user's, perhaps)
hears of it; when the database is away, every one does at once.

A subclass says how to commit a group (`commit`, one result per item, in order) and may
react to a settled group (`settled`) or to having nothing left to commit (`idle`), or say
that a failure is never one item's (`isolates`).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from levqor.db.engine import unavailable

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 500


class GroupCommit(Generic[Item, Result]):
    def __init__(self) -> None:
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writing: list[tuple[Item, asyncio.Future[Result]]] = []  # in the commit
        self._flushing: asyncio.Task[None] | None = None

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """Queue `item` for the next commit; the future gets its result."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return future

    def in_flight(self) -> list[Item]:
        """The items queued or committing."""
        return [item for item, _ in (*self._pending, *self._writing)]

    @property
    def flushing(self) -> asyncio.Task[None] | None:
        """The commit in progress, if any (shutdown waits for it)."""
        return None if self._flushing is None or self._flushing.done() else self._flushing

    async def commit(self, items: list[Item]) -> list[Result]:
        """Commit `items` in one transaction; a result for each, in order."""
        raise NotImplementedError

    def settled(self, items: list[Item], results: list[Result]) -> None:
        """`items` committed with `results` (their futures have them already)."""

    def idle(self) -> None:
        """Nothing is left to commit."""

    def isolates(self, exc: Exception) -> bool:
        """Whether a group that failed with `exc` is committed again item by item, to
        find the one at fault: not when the database is away (each would fail alike)."""
        return not unavailable(exc)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._writing = batch
            try:
                await self._commit(batch)
            except Exception as exc:  # noqa: BLE001  handed to each waiting future
                if len(batch) == 1 or not self.isolates(exc):
                    _fail(batch, exc)
                else:
                    await self._one_by_one(batch)
            finally:
                self._writing = []
        self.idle()

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        for entry in batch:
            try:
                await self._commit([entry])
            except Exception as exc:  # noqa: BLE001  handed to that item's future
                _fail([entry], exc)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        results = await self.commit(items)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        self.settled(items, results)


def _fail(batch: list[tuple[Item, asyncio.Future[Result]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
