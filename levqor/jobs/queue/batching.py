"""Group commit for new runs on SQLite.

SQLite has one writer at a time, and under `levqor up` the API and its worker process
take turns at the write lock. A transaction per webhook (BEGIN IMMEDIATE, the debit,
the ledger row, the insert, COMMIT: each a hop to SQLite's thread and back through a
busy event loop) held that lock for milliseconds while dozens of webhooks queued
behind it. Runs queued while a commit is in flight are committed together in the next
one: one transaction, one debit per user, one insert per shape of row. At low load each
run commits alone, with no added wait. PostgreSQL needs none of this: its paid enqueue
is one autocommit statement and its writers do not wait for each other.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from sqlalchemy import insert

from levqor.billing import service as billing
from levqor.db.engine import Database, unavailable
from levqor.jobs.models import jobs_table

MAX_BATCH = 500
Entry = tuple[dict[str, Any], int, "asyncio.Future[bool]"]  # the job, its cost, its answer


class EnqueueBatcher:
    def __init__(self, db: Database) -> None:
        # Weakly: the back-end keeps one batcher per database, keyed weakly by it.
        self._db = weakref.ref(db)
        self._pending: list[Entry] = []
        self._flushing: asyncio.Task[None] | None = None

    def enqueue(self, job: dict[str, Any], cost: int) -> asyncio.Future[bool]:
        """Queue `job` for the next commit; the future says whether its credits were
        taken (and so whether it was inserted)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((job, cost, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                charged = await self._commit(batch)
            except Exception as exc:  # noqa: BLE001  handed to each waiting request
                if len(batch) == 1 or unavailable(exc):
                    _fail(batch, exc)
                else:
                    # One run's bad row must not fail the others (another user's,
                    # perhaps): each alone, so only the bad one hears of it.
                    await self._one_by_one(batch)
                continue
            _answer(batch, charged)

    async def _one_by_one(self, batch: list[Entry]) -> None:
        for entry in batch:
            try:
                charged = await self._commit([entry])
            except Exception as exc:  # noqa: BLE001  handed to that request
                _fail([entry], exc)
                continue
            _answer([entry], charged)

    async def _commit(self, batch: list[Entry]) -> list[bool]:
        """One transaction: each user's runs charged together, the charged ones inserted."""
        by_user: dict[str, list[int]] = {}
        for position, (job, _, _) in enumerate(batch):
            by_user.setdefault(job["user_id"], []).append(position)
        charged = [False] * len(batch)
        db = self._db()
        if db is None:
            raise RuntimeError("the database was closed")
        async with db.transaction() as connection:
            for user_id, positions in by_user.items():
                charges = [(batch[i][0]["id"], batch[i][1]) for i in positions]
                answers = await billing.charge_runs(connection, user_id=user_id, charges=charges)
                for position, answer in zip(positions, answers, strict=True):
                    charged[position] = answer
            shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for (job, _, _), taken in zip(batch, charged, strict=True):
                if taken:
                    shapes.setdefault(tuple(job), []).append(job)
            for rows in shapes.values():  # an insert's rows must name the same columns
                await connection.execute(insert(jobs_table), rows)
        return charged


def _answer(batch: list[Entry], charged: list[bool]) -> None:
    for (_, _, future), taken in zip(batch, charged, strict=True):
        if not future.done():
            future.set_result(taken)


def _fail(batch: list[Entry], exc: Exception) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
