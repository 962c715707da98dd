"""Group commit for a worker's job writes.

Every checkpoint and state change of the jobs a worker runs goes through one `JobWriter`.
A checkpoint waits for its transaction to commit, so a step's output is durable before
the next step starts; a job's last write (its new state) does not hold the worker's slot
while it commits. Writes that arrive while a transaction is in flight are committed
together in the next one (`db.group_commit`).

A write also carries the worker's next claim when its slots are free (a `Claimer`):
under load, jobs end, their writes go out with the claim of the jobs that take their
slots, and the worker pays one round trip and one commit (on SQLite, one turn at the
write lock) where it would pay two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from levqor.db.engine import Database
from levqor.db.group_commit import GroupCommit
from levqor.jobs import queue
from levqor.jobs.queue import Claimed, ClaimRequest, JobWrite


class Claimer(Protocol):
    """The worker whose claims ride along with its writes."""

    def reserve(self, *, releases: bool) -> ClaimRequest | None:
        """The claim to send with the next write (its slots held until `claimed`);
        `releases`: the write hands jobs back (a new state), freeing room."""
        ...

    def claimed(self, request: ClaimRequest, jobs: list[Claimed]) -> None:
        """What `request` claimed (nothing if its statement failed); slots released."""
        ...

    def writes_idle(self) -> None:
        """No write in flight or waiting: the next claim is the worker's own."""
        ...


class JobWriter(GroupCommit[JobWrite, bool]):
    """Each write's result says whether the worker still held its job (False: nothing
    was written)."""

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        on_release: Callable[[], None] = lambda: None,
        claimer: Claimer | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.worker_id = worker_id
        self.claimer = claimer
        # Called once jobs' final states are committed: until then they still count as
        # running (per-user limits), so the worker may be waiting for exactly this.
        self.on_release = on_release
        self.finished = 0  # runs whose final state this writer committed (the drain rate)

    async def write(self, write: JobWrite) -> bool:
        """Commit `write`; False when the worker no longer holds the job (nothing written)."""
        return await self.submit(write)

    def releasing(self) -> bool:
        """A write queued or committing hands a job back (a new state)."""
        return _hands_back(self.in_flight())

    def unwritten(self) -> set[str]:
        """Jobs with a write queued or committing: still this worker's business."""
        return {write.job_id for write in self.in_flight()}

    async def commit(self, items: list[JobWrite]) -> list[bool]:
        if any(write.callback for write in items):
            # A finished job's callback is queued with its state, atomically.
            async with self.db.transaction() as connection:
                owned = await queue.write_batch(connection, worker_id=self.worker_id, writes=items)
        else:
            owned = await self._commit_and_claim(items)
        return [write.job_id in owned for write in items]

    async def _commit_and_claim(self, writes: list[JobWrite]) -> set[str]:
        claim = None if self.claimer is None else self.claimer.reserve(releases=_hands_back(writes))
        claimed: list[Claimed] = []
        try:
            owned, claimed = await queue.write_and_claim(
                self.db, worker_id=self.worker_id, writes=writes, claim=claim
            )
        finally:
            if claim is not None:
                assert self.claimer is not None
                self.claimer.claimed(claim, claimed)
        return owned

    def settled(self, items: list[JobWrite], results: list[bool]) -> None:
        self.finished += sum(
            1
            for write, kept in zip(items, results, strict=True)
            if kept and write.state is not None and write.state.final
        )
        if _hands_back(items):
            self.on_release()

    def idle(self) -> None:
        if self.claimer is not None:
            self.claimer.writes_idle()


def _hands_back(writes: Iterable[JobWrite]) -> bool:
    """A new state among `writes`: its job leaves the worker, freeing room for a claim."""
    return any(write.state for write in writes)
