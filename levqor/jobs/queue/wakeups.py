"""Waking PostgreSQL workers after the webhook intake queued runs: one NOTIFY at a time.

A transaction that sends NOTIFY takes a database-wide lock at commit and holds it until
the commit is done, WAL flush included, so that notifications arrive in commit order
(PostgreSQL's `PreCommit_Notify`). Every notifying commit therefore waits for the one
before it: with the notification inside each paid enqueue, the intake's commits queued
one behind the other instead of sharing WAL flushes, and its p99 stretched to several
times its median under load (Recall.ai's write-up of the same lock: "Postgres
LISTEN/NOTIFY does not scale", 2025).

So the paid enqueue commits without one, and `Wakeups.wake` sends it afterwards, on its
own: at most one in flight per process, the enqueues that commit meanwhile folded into
the next. It is sent after the runs' commit, so a woken worker finds them. It does not
wait for its own WAL flush (`synchronous_commit` off for that one statement): a wake-up
lost to a crash costs a worker's poll interval, never a run.
"""

from __future__ import annotations

from sqlalchemy import text

from levqor.db.engine import Database
from levqor.jobs.queue.statements import CHANNEL
from levqor.logging import get_logger

log = get_logger("levqor.queue")
NOTIFY_UNFLUSHED = text(
    f"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{CHANNEL}', '')"
)


class Wakeups:
    """One database's: the back-end keeps one per database."""

    def __init__(self) -> None:
        self._sending = False
        self._again = False
        self.sent = 0

    def wake(self, db: Database) -> None:
        """Runs were committed to `db`: make sure a NOTIFY starts after this call."""
        if self._sending:
            self._again = True  # the one in flight may have started before their commit
            return
        self._sending = True
        db.in_background(self._send(db))

    async def _send(self, db: Database) -> None:
        try:
            while True:
                self._again = False
                async with db.autocommit() as connection:
                    await connection.execute(NOTIFY_UNFLUSHED)
                self.sent += 1
                if not self._again:
                    return
        except Exception as exc:  # noqa: BLE001  the workers' poll finds the runs
            log.warning("notify_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._sending = False
