"""Group commit for new runs on SQLite.

SQLite has one writer at a time, and under `levqor up` the API and its worker process
take turns at the write lock. A transaction per webhook (BEGIN IMMEDIATE, the debit,
the ledger row, the insert, COMMIT: each a hop to SQLite's thread and back through a
busy event loop) held that lock for milliseconds while dozens of webhooks queued
behind it. Runs queued while a commit is in flight are committed together in the next
one: one transaction, one debit per user, one insert per shape of row. At low load each
run commits alone, with no added wait. PostgreSQL needs none of this: its paid enqueue
is one autocommit statement, and its writers share WAL flushes (the workers' wake-up is
sent apart, see `wakeups`).
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import insert

from levqor.billing import service as billing
from levqor.db.engine import Database
from levqor.db.group_commit import GroupCommit
from levqor.jobs.models import jobs_table

Run = tuple[dict[str, Any], int]  # the job's row, its cost in credits


class EnqueueBatcher(GroupCommit[Run, bool]):
    """Each run's result says whether its credits were taken (and so whether it was
    inserted)."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        # Weakly: the back-end keeps one batcher per database, keyed weakly by it.
        self._db = weakref.ref(db)

    async def enqueue(self, job: dict[str, Any], cost: int) -> bool:
        return await self.submit((job, cost))

    async def commit(self, items: list[Run]) -> list[bool]:
        """One transaction: each user's runs charged together, the charged ones inserted."""
        by_user: dict[str, list[int]] = {}
        for position, (job, _) in enumerate(items):
            by_user.setdefault(job["user_id"], []).append(position)
        charged = [False] * len(items)
        db = self._db()
        if db is None:
            raise RuntimeError("the database was closed")
        async with db.transaction() as connection:
            for user_id, positions in by_user.items():
                charges = [(items[i][0]["id"], items[i][1]) for i in positions]
                answers = await billing.charge_runs(connection, user_id=user_id, charges=charges)
                for position, answer in zip(positions, answers, strict=True):
                    charged[position] = answer
            shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for (job, _), taken in zip(items, charged, strict=True):
                if taken:
                    shapes.setdefault(tuple(job), []).append(job)
            for rows in shapes.values():  # an insert's rows must name the same columns
                await connection.execute(insert(jobs_table), rows)
        return charged
