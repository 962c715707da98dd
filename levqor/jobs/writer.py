"""Group commit for a worker's job writes.

Every checkpoint and state change of the jobs a worker runs goes through one `JobWriter`.
A checkpoint waits for its transaction to commit, so a step's output is durable before
the next step starts; a job's last write (its new state) does not hold the worker's slot
while it commits. Writes that arrive while a transaction is in flight are gathered and
committed together in the next one. At low load each write commits on its own, with
no added wait; under load one transaction carries many jobs, which is what lets a worker
finish thousands of short jobs a second instead of paying a transaction for each.

A write also carries the worker's next claim when its slots are free (a `Claimer`):
under load, jobs end, their writes go out with the claim of the jobs that take their
slots, and the worker pays one round trip and one commit (on SQLite, one turn at the
write lock) where it would pay two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from levqor.db.engine import Database, unavailable
from levqor.jobs import queue
from levqor.jobs.queue import Claimed, ClaimRequest, JobWrite

MAX_BATCH = 500


class Claimer(Protocol):
    """The worker whose claims ride along with its writes."""

    def reserve(self) -> ClaimRequest | None:
        """The claim to send with the next write (its slots held until `claimed`)."""
        ...

    def claimed(self, request: ClaimRequest, jobs: list[Claimed]) -> None:
        """What `request` claimed (nothing if its statement failed); slots released."""
        ...

    def writes_idle(self) -> None:
        """No write in flight or waiting: the next claim is the worker's own."""
        ...


class JobWriter:
    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        on_release: Callable[[], None] = lambda: None,
        claimer: Claimer | None = None,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.claimer = claimer
        # Called once jobs' final states are committed: until then they still count as
        # running (per-user limits), so the worker may be waiting for exactly this.
        self.on_release = on_release
        self._pending: list[tuple[JobWrite, asyncio.Future[bool]]] = []
        self._writing: list[tuple[JobWrite, asyncio.Future[bool]]] = []  # in the commit
        self._flushing: asyncio.Task[None] | None = None
        self.finished = 0  # runs whose final state this writer committed (the drain rate)

    async def write(self, write: JobWrite) -> bool:
        """Commit `write`; False when the worker no longer holds the job (nothing written)."""
        return await self.submit(write)

    def submit(self, write: JobWrite) -> asyncio.Future[bool]:
        """Queue `write` for the next commit; the future says whether it was kept."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return future

    def unwritten(self) -> set[str]:
        """Jobs with a write queued or committing: still this worker's business."""
        return {write.job_id for write, _ in (*self._pending, *self._writing)}

    @property
    def flushing(self) -> asyncio.Task[None] | None:
        """The commit in progress, if any (shutdown waits for it)."""
        return None if self._flushing is None or self._flushing.done() else self._flushing

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._writing = batch
            try:
                owned = await self._commit(batch)
            except Exception as exc:  # noqa: BLE001  handed to each waiting job's task
                if len(batch) == 1 or unavailable(exc):
                    _fail(batch, exc)  # each job's task hears of it
                else:
                    # One job's bad write must not fail the others' (another user's,
                    # perhaps): each alone, so only the bad one hears of it.
                    await self._one_by_one(batch)
                continue
            else:
                self._settle(batch, owned)
            finally:
                self._writing = []
        if self.claimer is not None:
            self.claimer.writes_idle()

    async def _one_by_one(self, batch: list[tuple[JobWrite, asyncio.Future[bool]]]) -> None:
        for pair in batch:
            try:
                owned = await self._commit([pair])
            except Exception as exc:  # noqa: BLE001  handed to that job's task
                _fail([pair], exc)
                continue
            self._settle([pair], owned)

    async def _commit(self, batch: list[tuple[JobWrite, asyncio.Future[bool]]]) -> set[str]:
        # One statement on PostgreSQL, unless a finished job's callback must be queued
        # with it, atomically.
        writes = [write for write, _ in batch]
        atomic = any(write.callback for write in writes)
        claim = None if atomic or self.claimer is None else self.claimer.reserve()
        if claim is not None:
            return await self._commit_and_claim(writes, claim)
        writing = self.db.transaction() if atomic else self.db.one_statement()
        async with writing as connection:
            return await queue.write_batch(connection, worker_id=self.worker_id, writes=writes)

    async def _commit_and_claim(self, writes: list[JobWrite], claim: ClaimRequest) -> set[str]:
        assert self.claimer is not None
        claimed: list[Claimed] = []
        try:
            async with self.db.one_statement() as connection:
                owned, claimed = await queue.write_and_claim(connection, writes=writes, claim=claim)
        finally:
            self.claimer.claimed(claim, claimed)
        return owned

    def _settle(self, batch: list[tuple[JobWrite, asyncio.Future[bool]]], owned: set[str]) -> None:
        for write, future in batch:
            if not future.done():
                future.set_result(write.job_id in owned)
            if write.state is not None and write.state.final and write.job_id in owned:
                self.finished += 1
        if any(write.state for write, _ in batch):
            self.on_release()


def _fail(batch: list[tuple[JobWrite, asyncio.Future[bool]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
