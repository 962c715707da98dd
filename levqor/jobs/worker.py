"""The worker loop: claim due jobs, run them concurrently, keep their leases alive.

Waking: a new run sets `wake` (in the same process for `levqor up`, by LISTEN/NOTIFY on
PostgreSQL), and so does a finishing job once half the slots are free: claiming waits
for room for a batch rather than paying a transaction per freed slot. Failing those, the
worker polls every `poll_interval_s`; callback deliveries are claimed on that poll (no
more often than a fifth of `callback_backoff_s`, the shortest wait before a retry), or
at once when one of this worker's own jobs queued one. Under load the claim rides along
with the writes of the jobs that just ended (`JobWriter`, `reserve`): the loop claims
itself only when no write is going out.

Shutdown (SIGTERM): stop claiming, let running jobs finish for up to
`shutdown_timeout_s`, then hand back the rest so another worker resumes them from their
last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from levqor.connectors import safety
from levqor.db.base import utcnow
from levqor.db.engine import unavailable
from levqor.jobs import callbacks, listener, queue
from levqor.jobs.executor import Executor
from levqor.jobs.models import CallbackDelivery
from levqor.jobs.queue import Claimed, ClaimRequest
from levqor.jobs.retry import backoff_s
from levqor.logging import get_logger
from levqor.runtime import Runtime
from levqor.workflows.definition import Retry

log = get_logger("levqor.worker")
VACUUM_CHECK_S = 0.5
CLAIM_BACKOFF_S, CLAIM_BACKOFF_MAX_S = 0.1, 5.0
CRASH_BACKOFF = Retry(backoff_s=5, max_backoff_s=300)


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int = 10,
        worker_id: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.concurrency = concurrency
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = timedelta(seconds=settings.job_lease_s)
        self.heartbeat_s = settings.worker_heartbeat_s
        self.poll_interval_s = settings.worker_poll_interval_s
        # A delivery's retry waits `callback_backoff_s` at least: polling for retries
        # more often than a fifth of that adds statements, not promptness (at a 50 ms
        # job poll, a loaded worker spent 2-4% of its CPU on empty delivery polls).
        self.delivery_poll_s = max(self.poll_interval_s, settings.callback_backoff_s / 5)
        self.shutdown_timeout_s = settings.worker_shutdown_timeout_s
        self.http = http or safety.guarded_client(settings.allow_private_urls)
        self.executor = Executor(
            runtime.db,
            self.http,
            worker_id=self.worker_id,
            cipher=runtime.cipher,
            settings=settings,
            hooks=runtime.job_hooks,
            on_release=self._released,
            claimer=self,
        )
        self.running: dict[str, asyncio.Task[None]] = {}
        self.sending: dict[str, asyncio.Task[None]] = {}  # callback deliveries
        self.listening = asyncio.Event()  # set while LISTEN/NOTIFY wakes this worker
        self.wake = runtime.job_wakeup
        self.claim_batch = max(1, concurrency // 2)
        self.came_up_short = False  # the last claim found fewer jobs than free slots
        self.claims: list[ClaimRequest] = []  # in flight: their slots are held
        self.stopping = False
        self.releases = 0  # commits of final states so far
        self.deliveries_due = True
        self.next_delivery_poll = 0.0
        self.last_beat = (time.monotonic(), 0)  # when, and runs finished by then

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker_started", worker=self.worker_id, concurrency=self.concurrency)
        beats_done = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(beats_done))
        listening = vacuum = None
        if not self.runtime.db.is_sqlite:
            vacuum = asyncio.create_task(self._vacuum(stop))
            listening = asyncio.create_task(
                listener.listen(
                    self.runtime.settings.sqlalchemy_url, self.wake, stop, self.listening
                )
            )
        failures = 0
        try:
            while not stop.is_set():
                # Cleared before claiming, never after: a job that finishes (or arrives)
                # while we claim sets it again, and the wait below then returns at once.
                self.wake.clear()
                try:
                    claimed = await self.claim_and_start()
                except Exception as exc:  # noqa: BLE001  the database is away: wait, retry
                    failures += 1
                    await self._back_off(stop, failures, exc)
                    continue
                failures = 0
                if not claimed or self.came_up_short:  # nothing more to take for now
                    await self._sleep(stop)
        finally:
            self.stopping = True
            if vacuum is not None:
                vacuum.cancel()
            if listening is not None:
                stop.set()
                await listening
            await self._shutdown(beat, beats_done)

    async def _back_off(self, stop: asyncio.Event, failures: int, exc: Exception) -> None:
        delay = min(CLAIM_BACKOFF_MAX_S, CLAIM_BACKOFF_S * 2 ** (failures - 1))
        log.warning("claim_failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)

    async def claim_and_start(self) -> int:
        return await self._start_jobs() + await self._start_deliveries()

    async def _start_deliveries(self) -> int:
        free = self.concurrency - len(self.sending)
        now = time.monotonic()
        if free <= 0 or not (self.deliveries_due or now >= self.next_delivery_poll):
            return 0
        self.deliveries_due, self.next_delivery_poll = False, now + self.delivery_poll_s
        async with self.runtime.db.one_statement() as connection:
            due = await callbacks.claim(
                connection, worker_id=self.worker_id, limit=free, lease=self.lease, now=utcnow()
            )
        for delivery in due:
            self.sending[delivery.id] = asyncio.create_task(self._deliver(delivery))
        return len(due)

    async def _deliver(self, delivery: callbacks.ClaimedDelivery) -> None:
        try:
            await callbacks.deliver(
                delivery,
                db=self.runtime.db,
                http=self.http,
                cipher=self.runtime.cipher,
                settings=self.runtime.settings,
                worker_id=self.worker_id,
            )
        except Exception:
            log.exception("callback_crashed", delivery_id=delivery.id)
        finally:
            self.sending.pop(delivery.id, None)

    @property
    def busy(self) -> list[asyncio.Task[None]]:
        flushing = self.executor.writer.flushing
        return [
            *self.running.values(),
            *self.sending.values(),
            *([flushing] if flushing is not None else []),
        ]

    @property
    def free(self) -> int:
        held = sum(claim.limit for claim in self.claims)
        return self.concurrency - len(self.running) - held

    async def _start_jobs(self) -> int:
        free = self.free
        if free <= 0 or self._writes_will_claim():
            return 0
        releases_before = self.releases
        request = self._reserve(free)
        jobs: list[Claimed] = []
        try:
            jobs = await queue.take_alone(self.runtime.db, request)
        finally:
            self.claimed(request, jobs)
        if self.came_up_short and self.releases != releases_before:
            self.wake.set()  # a release landed while we claimed: it may have freed a user
        return len(jobs)

    def _writes_will_claim(self) -> bool:
        """A write is going out and will carry the claim: leave it to the write. After a
        short claim, only a write that hands jobs back does (`reserve`); a claim now
        would race it and, while those jobs still count against their users, come back
        short or empty again."""
        writer = self.executor.writer
        if writer.flushing is None:
            return False
        return not self.came_up_short or writer.releasing()

    def reserve(self, *, releases: bool) -> ClaimRequest | None:
        """The claim a write going out carries (see `JobWriter`): the free slots, unless
        this worker is stopping, or its last claim came back short and this write
        `releases` no job (nothing changed that a claim could find; a new run wakes
        the loop, which claims it)."""
        free = self.free
        if free <= 0 or self.stopping or (self.came_up_short and not releases):
            return None
        return self._reserve(free)

    def _reserve(self, limit: int) -> ClaimRequest:
        # Until its jobs are in `running`, their slots are held and upkeep must not
        # orphan them.
        now = utcnow()
        request = ClaimRequest(
            worker_id=self.worker_id,
            limit=limit,
            lease=self.lease,
            now=now,
            max_running_per_user=self.runtime.settings.max_running_jobs_per_user,
            concurrency=self.concurrency,
            alive_since=queue.alive_since(now, heartbeat_s=self.heartbeat_s),
        )
        self.claims.append(request)
        return request

    def claimed(self, request: ClaimRequest, jobs: list[Claimed]) -> None:
        """Start what a claim took; its slots are no longer held. Once the worker is
        stopping, nothing starts: shutdown waits for the write that carried the claim,
        then hands back every job this worker holds, these with them."""
        self.claims.remove(request)
        self.came_up_short = len(jobs) < request.limit
        if self.stopping:
            return
        for job in jobs:
            self.running[job.id] = asyncio.create_task(self._execute(job))

    def writes_idle(self) -> None:
        if self.free >= self.claim_batch or self.came_up_short:
            self.wake.set()

    async def drain(self, *, timeout_s: float = 30) -> None:
        """Run until nothing is due or running (tests and one-shot use)."""
        async with asyncio.timeout(timeout_s):
            await self._upkeep()
            while True:
                started = await self.claim_and_start()
                if self.busy:
                    await asyncio.wait(self.busy, timeout=0.05)
                elif not started and not await self._anything_due_soon():
                    return
                else:
                    await asyncio.sleep(0.01)

    async def _anything_due_soon(self) -> bool:
        horizon = utcnow() + timedelta(seconds=2)
        async with self.runtime.db.session(write=False) as session:
            jobs = await queue.anything_due_soon(session, horizon=horizon)
            deliveries = await session.scalar(
                select(func.count())
                .select_from(CallbackDelivery)
                .where(
                    (CallbackDelivery.status == "sending")
                    | (
                        (CallbackDelivery.status == "pending")
                        & (CallbackDelivery.next_attempt_at <= horizon)
                    )
                )
            )
        return bool(jobs or deliveries)

    async def _execute(self, job: Claimed) -> None:
        try:
            await self.executor.run(job)
        except Exception as exc:
            log.exception("job_crashed", job_id=job.id)
            await self._crashed(job, exc)
        finally:
            self.running.pop(job.id, None)
            if job.callback_url:
                self.deliveries_due = True
            if self.deliveries_due or self.free >= self.claim_batch:
                self.wake.set()

    async def _crashed(self, job: Claimed, exc: Exception) -> None:
        """Count a crash outside any step against the job, so one that crashes every
        time (a poison job) fails after `job_max_crashes` instead of holding a slot of
        its user for ever. The database going away is not the job's fault: then nothing
        is counted, and the next beat hands the job back (see `_upkeep`)."""
        if unavailable(exc):
            return
        crashes = job.crashes + 1
        retry_at = utcnow() + timedelta(seconds=backoff_s(crashes, CRASH_BACKOFF))
        try:
            async with self.runtime.db.session(write=True) as session, session.begin():
                status = await queue.record_crash(
                    session,
                    job_id=job.id,
                    worker_id=self.worker_id,
                    error=f"internal error: {type(exc).__name__}",
                    max_crashes=self.runtime.settings.job_max_crashes,
                    now=utcnow(),
                    retry_at=retry_at,
                )
        except Exception:
            log.exception("job_crash_not_recorded", job_id=job.id)
            return
        log.warning("job_crash_recorded", job_id=job.id, crashes=crashes, status=status)
        self._released()

    def _released(self) -> None:
        """Final states committed: those jobs no longer count against per-user limits.
        A claim that came up short may have been held back by them, so try again; a
        full claim needs no extra wake (finishing jobs wake the loop themselves)."""
        self.releases += 1
        if self.came_up_short:
            self.wake.set()

    def _finished_per_s(self) -> float:
        """Runs finished per second since the last beat."""
        then, finished_then = self.last_beat
        now, finished = time.monotonic(), self.executor.writer.finished
        self.last_beat = (now, finished)
        return (finished - finished_then) / max(now - then, 1e-3)

    async def _sleep(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(
            waiters, timeout=self.poll_interval_s, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waiters:
            waiter.cancel()

    async def _heartbeat(self, done: asyncio.Event) -> None:
        """Until `done`: a stopping worker beats on while its jobs finish."""
        while not done.is_set():
            try:
                await self._upkeep()
            except Exception:  # the database is away; the next beat tries again
                log.exception("heartbeat_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=self.heartbeat_s)

    async def _vacuum(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(VACUUM_CHECK_S)
            try:
                async with self.runtime.db.reading() as connection:
                    if await queue.vacuum_if_needed(connection):
                        log.info("jobs_table_upkeep")
            except Exception:
                log.exception("vacuum_failed")

    async def _upkeep(self) -> None:
        """Beat, renew this worker's leases and requeue the jobs of workers that died."""
        now = utcnow()
        async with self.runtime.db.session(write=True) as session, session.begin():
            await queue.beat(
                session,
                worker_id=self.worker_id,
                host=self.host,
                pid=os.getpid(),
                concurrency=self.concurrency,
                now=now,
                finished_per_s=self._finished_per_s(),
            )
            await queue.heartbeat(
                session,
                worker_id=self.worker_id,
                running=list(self.running),
                lease=self.lease,
                now=now,
            )
            # Only jobs leased before this look can be orphans: a claim in flight has
            # taken jobs that are not in `running` yet, and one may go out and commit
            # while the statement below is on its way (handed back, another worker
            # would run them again).
            mine = {*self.running, *self.executor.writer.unwritten()}
            orphans = await queue.release(
                session,
                worker_id=self.worker_id,
                now=now,
                keep=list(mine),
                leased_before=min((claim.now for claim in self.claims), default=utcnow()),
                lease=self.lease,
            )
            if orphans:
                log.warning("jobs_orphaned", worker=self.worker_id, jobs=orphans)
            recovered = await queue.recover_lost(
                session,
                now=now,
                silent_since=queue.alive_since(now, heartbeat_s=self.heartbeat_s),
                max_crashes=self.runtime.settings.job_max_crashes,
            )
        if recovered:
            log.warning("jobs_recovered", jobs=recovered)
            self.wake.set()

    async def settle(self, *, timeout_s: float | None = None) -> None:
        """Wait for the running jobs and deliveries, then for what they wrote to commit;
        after `timeout_s`, the jobs still running are cancelled."""
        working = [*self.running.values(), *self.sending.values()]
        if working:
            await asyncio.wait(working, timeout=timeout_s)
        for task in working:
            task.cancel()
        while (flushing := self.executor.writer.flushing) is not None:
            _, pending = await asyncio.wait([flushing], timeout=timeout_s)
            if pending:
                log.error("job_writes_unfinished", worker=self.worker_id)
                return

    async def _shutdown(self, beat: asyncio.Task[None], beats_done: asyncio.Event) -> None:
        if self.busy:
            log.info("worker_finishing", jobs=len(self.running), callbacks=len(self.sending))
        # What finished jobs wrote commits before the rest is handed back. Meanwhile the
        # worker beats on and renews its leases: silent for two and a half beats, it
        # would be taken for dead and its jobs run again elsewhere while they run here.
        try:
            await self.settle(timeout_s=self.shutdown_timeout_s)
        finally:
            # A beat under way finishes rather than being cut short mid-transaction;
            # one stuck on an unreachable database is cancelled after a beat's time.
            beats_done.set()
            _, stuck = await asyncio.wait([beat], timeout=self.heartbeat_s)
            for task in stuck:
                task.cancel()
        async with self.runtime.db.session(write=True) as session, session.begin():
            handed_back = await queue.release(session, worker_id=self.worker_id, now=utcnow())
            await queue.forget_worker(session, worker_id=self.worker_id)
        if handed_back:
            log.info("worker_handed_back", jobs=handed_back)
        await self.http.aclose()
        self.executor.close()
        log.info("worker_stopped", worker=self.worker_id)
