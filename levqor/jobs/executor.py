"""Run one claimed job: its workflow version's steps, in order, checkpointing each.

A step that already succeeded (a resumed run, a replay) is not run again: its stored
output feeds the templates of the steps after it. Errors are classified by the
connectors: retryable ones reschedule the job with backoff until the step's attempts
run out, the rest fail the job at once (the dead-letter queue), unless the step says
`on_error: continue`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from cryptography.fernet import MultiFernet

from levqor import jsonvalues, metrics
from levqor.config import Settings
from levqor.connectors import registry
from levqor.connectors.errors import ConnectorError, Hold, Reschedule, StopRun
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.jobs import queue
from levqor.jobs.hooks import JobHooks
from levqor.jobs.models import JobStep
from levqor.jobs.queue import Claimed, JobState, Outcome, StepCheckpoint
from levqor.jobs.retry import backoff_s
from levqor.jobs.steps import StepEnvironment
from levqor.jobs.writer import Claimer, JobWriter
from levqor.logging import get_logger
from levqor.workflows import service as workflows_service
from levqor.workflows import templates
from levqor.workflows.definition import Step, WorkflowDefinition
from levqor.workflows.sandbox import SandboxPool

log = get_logger("levqor.executor")
MAX_STORED_OUTPUT_BYTES = 64 * 1024
FINISHED_STEP = ("succeeded", "skipped", "continued")
DEFINITION_CACHE_SIZE = 1000


@dataclass(frozen=True)
class StepStart:
    """A step attempt as it began: what its checkpoint will carry."""

    step_id: str
    position: int
    attempts: int
    started_at: datetime


@dataclass(frozen=True)
class StepFailure:
    message: str
    retryable: bool
    retry_after_s: float | None = None


class Executor:
    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        *,
        worker_id: str,
        cipher: MultiFernet,
        settings: Settings,
        hooks: JobHooks | None = None,
        on_release: Callable[[], None] = lambda: None,
        claimer: Claimer | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.steps = StepEnvironment(
            db, http, cipher=cipher, settings=settings, hooks=hooks or JobHooks()
        )
        self.worker_id = worker_id
        self.writer = JobWriter(db, worker_id=worker_id, on_release=on_release, claimer=claimer)
        self.sandbox = SandboxPool(
            size=settings.template_sandboxes,
            memory_mb=settings.template_memory_mb,
            timeout_s=settings.template_timeout_s,
        )
        self._definitions: OrderedDict[tuple[str, int], asyncio.Future[WorkflowDefinition]] = (
            OrderedDict()
        )

    async def run(self, job: Claimed) -> None:
        definition = await self._definition(job)
        done = await self._checkpoints(job)
        data: dict[str, Any] = {"input": job.input, "steps": {}}
        last_output: Any = None
        final = len(definition.steps) - 1
        for position, step in enumerate(definition.steps):
            checkpoint = done.get(step.id)
            if checkpoint is not None and checkpoint.status in FINISHED_STEP:
                data["steps"][step.id] = {"output": checkpoint.output}
                last_output = checkpoint.output
                continue
            attempt = (checkpoint.attempts if checkpoint else 0) + 1
            outcome = await self._run_step(
                job, step, position, attempt, data, last=position == final
            )
            if outcome is Outcome.STOP or position == final:
                return  # finished (the last checkpoint wrote it), or stopped here; recorded
            last_output = data["steps"][step.id]["output"]
        await self._save(job, state=queue.succeeded(last_output, utcnow()))

    def close(self) -> None:
        self.sandbox.close()

    async def _render(self, job: Claimed, step: Step, value: Any, data: dict[str, Any]) -> Any:
        """Plain templates render here; the rest in the sandbox, bounded from outside."""
        if templates.all_plain(value):
            return templates.render(value, data)
        return await self.sandbox.render(value, data, user_id=job.user_id, timeout_s=step.timeout_s)

    async def _checkpoints(self, job: Claimed) -> dict[str, JobStep]:
        if job.attempts == 1:
            return {}  # a job's first claim: nothing can have been checkpointed yet
        async with self.db.session(write=False) as session:
            return await queue.load_steps(session, job_id=job.id)

    async def _definition(self, job: Claimed) -> WorkflowDefinition:
        """Versions never change, so each is read and validated once per process (and
        once, not once per job, when a batch of its jobs starts together)."""
        key = (job.workflow_id, job.workflow_version)
        loading = self._definitions.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load_definition(job))
            self._definitions[key] = loading
            if len(self._definitions) > DEFINITION_CACHE_SIZE:
                self._definitions.popitem(last=False)
        if loading.done() and loading.exception() is None:
            return loading.result()  # the usual case, without a shield's extra future
        try:
            return await asyncio.shield(loading)
        except Exception:
            self._definitions.pop(key, None)  # not cached: the next job tries again
            raise

    async def _load_definition(self, job: Claimed) -> WorkflowDefinition:
        async with self.db.session(write=False) as session:
            return await workflows_service.definition_of(
                session, workflow_id=job.workflow_id, version=job.workflow_version
            )

    async def _run_step(
        self,
        job: Claimed,
        step: Step,
        position: int,
        attempt: int,
        data: dict[str, Any],
        *,
        last: bool = False,
    ) -> Outcome:
        """Run one step and checkpoint it. The last step's checkpoint also marks the job
        succeeded, in the same transaction."""
        record = StepStart(step.id, position, attempt, utcnow())
        try:
            if step.if_ is not None and not templates.is_true(
                await self._render(job, step, step.if_, data)
            ):
                data["steps"][step.id] = {"output": None}
                return await self._checkpoint(job, record, "skipped", None, finish=last)
            # What later steps read is what a resumed run reads back: storable.
            output = jsonvalues.storable(await self._call(job, step, data))
            await self.steps.after(job, step, output)
        except StopRun:
            passed = {"passed": False}
            data["steps"][step.id] = {"output": passed}
            state = queue.succeeded(passed, utcnow())
            await self._checkpoint(job, record, "succeeded", passed, state=state)
            return Outcome.STOP
        except Hold as hold:  # the step did not run: no checkpoint, nothing lost
            log.info("job_held", job_id=job.id, step=step.id, until=hold.until.isoformat())
            await self._save(job, state=queue.held(hold.until, f"step '{step.id}': {hold.message}"))
            return Outcome.STOP
        except Reschedule as pause:
            state = queue.paused(utcnow() + timedelta(seconds=pause.seconds))
            await self._checkpoint(job, record, "succeeded", {}, state=state)
            return Outcome.STOP
        except Exception as exc:  # noqa: BLE001  every failure is classified and recorded
            return await self._failed(job, step, record, attempt, data, classify(exc), last=last)
        data["steps"][step.id] = {"output": output}
        return await self._checkpoint(job, record, "succeeded", output, finish=last)

    async def _call(self, job: Claimed, step: Step, data: dict[str, Any]) -> Any:
        connector = registry.get(step.connector)
        action = registry.resolve(step.connector, step.action)
        params = await self._render(job, step, step.params, data)
        context = self.steps.context(job, step, data)
        credential = await self.steps.credential(job, step)
        await self.steps.before(job, step)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(step.timeout_s):  # in this task: no task per step
                return await connector.run(action.name, params, credential, context)
        finally:
            metrics.labelled(metrics.STEP_LATENCY, connector.name).observe(
                time.perf_counter() - started
            )

    async def _failed(
        self,
        job: Claimed,
        step: Step,
        record: StepStart,
        attempt: int,
        data: dict[str, Any],
        failure: StepFailure,
        *,
        last: bool = False,
    ) -> Outcome:
        log.info(
            "step_failed",
            job_id=job.id,
            step=step.id,
            attempt=attempt,
            retryable=failure.retryable,
            error=failure.message,
        )
        if step.on_error == "continue":
            data["steps"][step.id] = {"output": None, "error": failure.message}
            return await self._checkpoint(
                job, record, "continued", None, failure.message, finish=last
            )
        error = f"step '{step.id}': {failure.message}"
        if failure.retryable and attempt < step.retry.max_attempts:
            delay = backoff_s(attempt, step.retry, retry_after_s=failure.retry_after_s)
            state = queue.retrying(utcnow() + timedelta(seconds=delay), error)
        else:
            state = queue.failed(error, utcnow())
        await self._checkpoint(job, record, "failed", None, failure.message, state=state)
        return Outcome.STOP

    async def _checkpoint(
        self,
        job: Claimed,
        record: StepStart,
        status: str,
        output: Any,
        error: str | None = None,
        *,
        finish: bool = False,
        state: JobState | None = None,
    ) -> Outcome:
        """Store a step's outcome, with the job's new state if the step decided one
        (`finish`: the job succeeded with this output), in one transaction."""
        now = utcnow()
        step = StepCheckpoint(
            step_id=record.step_id,
            position=record.position,
            status=status,
            output=_bounded(output),
            error=error,
            attempts=record.attempts,
            started_at=record.started_at,
            finished_at=now,
        )
        if finish:
            state = queue.succeeded(output, now)
        kept = await self._save(job, step=step, state=state)
        return Outcome.NEXT if kept and state is None else Outcome.STOP

    async def _save(
        self, job: Claimed, *, step: StepCheckpoint | None = None, state: JobState | None
    ) -> bool:
        """Write a checkpoint and wait for it; a new state (the job leaves this worker)
        commits in the background, so the slot is free for the next job at once."""
        callback = state is not None and job.callback_url is not None
        written = self.writer.submit(
            queue.JobWrite(job.id, step=step, state=state, callback=callback)
        )
        if state is not None:
            written.add_done_callback(lambda done: self._report(job, done))
            return True
        owned = await written
        if not owned:
            log.info("job_lost", job_id=job.id, worker=self.worker_id)
        return owned

    def _report(self, job: Claimed, written: asyncio.Future[bool]) -> None:
        if written.cancelled():
            return
        if written.exception() is not None:
            log.error("job_write_failed", job_id=job.id, error=str(written.exception()))
        elif not written.result():
            log.info("job_lost", job_id=job.id, worker=self.worker_id)


def classify(exc: BaseException) -> StepFailure:
    if isinstance(exc, ConnectorError):
        return StepFailure(exc.message, exc.retryable, exc.retry_after_s)
    if isinstance(exc, TimeoutError):
        return StepFailure("the step timed out", retryable=True)
    if isinstance(exc, templates.TemplateFailed | registry.UnknownAction):
        return StepFailure(exc.detail, retryable=False)
    if isinstance(exc, ValueError):  # params that rendered to the wrong shape
        return StepFailure(f"invalid params: {exc}", retryable=False)
    log.exception("step_crashed")
    return StepFailure(f"internal error: {type(exc).__name__}", retryable=False)


def _bounded(output: Any) -> Any:
    """Step outputs are stored whole up to a size; past it, a truncated preview."""
    encoded = orjson.dumps(output, default=str)
    if len(encoded) <= MAX_STORED_OUTPUT_BYTES:
        return output
    preview = encoded[:MAX_STORED_OUTPUT_BYTES].decode(errors="ignore")
    return {"truncated": True, "preview": preview}
