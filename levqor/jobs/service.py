"""Runs as users see them: start, list, inspect, cancel, retry. Flush, never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors
from levqor.accounts.models import User
from levqor.billing import service as billing
from levqor.db import pages
from levqor.db.base import new_id, utcnow
from levqor.db.engine import Database
from levqor.jobs import callbacks, queue
from levqor.jobs.intake import IntakeGuard
from levqor.jobs.models import (
    CANCELLED,
    FAILED,
    FINAL_STATES,
    PRIORITIES,
    QUEUED,
    Job,
    JobStep,
)
from levqor.workflows import service as workflows_service
from levqor.workflows import templates
from levqor.workflows.models import Workflow


class NotRetryable(errors.Conflict):
    """Only a failed job can be retried."""

    code = "job_not_failed"


class AlreadyFinished(errors.Conflict):
    """The job has already finished."""

    code = "job_finished"


@dataclass(frozen=True)
class JobDetail:
    job: Job
    steps: list[JobStep]


async def start_run(
    session: AsyncSession,
    *,
    user: User,
    workflow_id: str,
    input: Any,
    priority: str = "normal",
    run_at: datetime | None = None,
    callback_url: str | None = None,
    cost: int,
    intake: IntakeGuard | None = None,
) -> Job:
    """Debit the run's credits and queue it, in the caller's one transaction; `intake`
    refuses it first while the user's (or everyone's) backlog is full."""
    workflow = await workflows_service.get(session, user=user, workflow_id=workflow_id)
    if intake is not None:
        await intake.admit(session, user_id=user.id)
    job = Job(
        **new_job(
            user_id=user.id,
            workflow=workflow,
            input=input,
            priority=priority,
            run_at=run_at,
            callback_url=callback_url,
        )
    )
    if not await billing.charge_run(session, user_id=user.id, amount=cost, job_id=job.id):
        raise billing.short_of_credits(cost)
    await queue.add(session, job)
    return job


def new_job(
    *,
    user_id: str,
    workflow: Workflow | workflows_service.WebhookTarget,
    input: Any,
    priority: str = "normal",
    run_at: datetime | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """A queued job's row, running the workflow's current version."""
    now = utcnow()
    return {
        "id": new_id("job"),
        "user_id": user_id,
        "workflow_id": workflow.id,
        "workflow_version": workflow.current_version,
        "status": QUEUED,
        "priority": PRIORITIES[priority],
        "input": input,
        "attempts": 0,
        "crashes": 0,
        "replays": 0,
        "run_at": run_at or now,
        "callback_url": callback_url,
        "created_at": now,
    }


async def start_from_webhook(
    db: Database,
    *,
    workflow_id: str,
    token: str,
    payload: Any,
    cost: int,
    intake: IntakeGuard | None = None,
) -> str:
    """The webhook trigger: the request body becomes the run's input; the new job's id.

    The product's hottest path, on one bare connection in autocommit and no ORM session:
    the checks read on it, and the job and its debit are written in one atomic step of
    their own (`queue.enqueue`, on that connection too on PostgreSQL).
    """
    async with queue.intake_connection(db) as connection:
        workflow = await workflows_service.webhook_target(
            connection, workflow_id=workflow_id, token=token
        )
        if intake is not None:
            await intake.admit(connection, user_id=workflow.user_id)
        job = new_job(user_id=workflow.user_id, workflow=workflow, input=payload)
        queued = await queue.enqueue(db, job, cost=cost, held=connection)
    if not queued:  # the rare path: say why
        async with db.reading() as connection:
            active = await connection.scalar(
                select(User.is_active).where(User.id == workflow.user_id)
            )
        if not active:
            raise errors.NotFound("No such webhook.")
        raise billing.short_of_credits(cost)
    return str(job["id"])


async def get(session: AsyncSession, *, user: User, job_id: str) -> JobDetail:
    job = await session.scalar(select(Job).where(Job.id == job_id, Job.user_id == user.id))
    if job is None:
        raise errors.NotFound("No such job.")
    steps = await session.scalars(
        select(JobStep).where(JobStep.job_id == job.id).order_by(JobStep.position)
    )
    return JobDetail(job, list(steps))


@dataclass(frozen=True)
class StepInput:
    """The params a step ran with, rendered again from what the run stored."""

    value: Any
    rendered: bool  # False: shown as written (a template rendered only by workers)
    error: str | None = None


async def step_inputs(session: AsyncSession, detail: JobDetail) -> dict[str, StepInput]:
    """Each reached step's input: its params rendered over the run's input and the
    outputs of the steps before it, as stored (the same data the worker rendered them
    over, so the same values). Templates that render only in the workers' sandbox
    (loops, calls) are shown as written: a page view never runs them."""
    definition = await workflows_service.definition_of(
        session, workflow_id=detail.job.workflow_id, version=detail.job.workflow_version
    )
    stored = {step.step_id: step for step in detail.steps}
    data: dict[str, Any] = {"input": detail.job.input, "steps": {}}
    found: dict[str, StepInput] = {}
    for step in definition.steps:
        checkpoint = stored.get(step.id)
        if checkpoint is None:
            break
        if not templates.all_plain(step.params):
            found[step.id] = StepInput(step.params, rendered=False)
        else:
            try:
                found[step.id] = StepInput(templates.render(step.params, data), rendered=True)
            except templates.TemplateFailed as exc:
                found[step.id] = StepInput(step.params, rendered=False, error=exc.detail)
        data["steps"][step.id] = {"output": checkpoint.output}
        if checkpoint.error is not None and checkpoint.status == "continued":
            data["steps"][step.id]["error"] = checkpoint.error
    return found


@dataclass(frozen=True)
class VersionOutcomes:
    """How one workflow version's finished runs went."""

    finished: int
    failed: int
    median_s: float | None  # from created to finished

    @property
    def failure_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


async def version_outcomes(
    session: AsyncSession,
    *,
    workflow_id: str,
    version: int,
    since: datetime | None = None,
    before: datetime | None = None,
    limit: int = 200,
) -> VersionOutcomes:
    """The latest `limit` finished (succeeded or failed) runs of one version, created in
    [since, before)."""
    query = select(Job.status, Job.created_at, Job.finished_at).where(
        Job.workflow_id == workflow_id,
        Job.workflow_version == version,
        Job.status.in_(("succeeded", FAILED)),
    )
    if since is not None:
        query = query.where(Job.created_at >= since)
    if before is not None:
        query = query.where(Job.created_at < before)
    rows = (await session.execute(query.order_by(Job.created_at.desc()).limit(limit))).all()
    took = sorted(
        (finished - created).total_seconds() for _status, created, finished in rows if finished
    )
    return VersionOutcomes(
        finished=len(rows),
        failed=sum(1 for status, _c, _f in rows if status == FAILED),
        median_s=took[len(took) // 2] if took else None,
    )


async def list_for_user(
    session: AsyncSession,
    *,
    user: User,
    status: str | None = None,
    workflow_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated: the cursor is the last (created_at, id) seen."""
    query = select(Job).where(Job.user_id == user.id)
    if status is not None:
        query = query.where(Job.status == status)
    if workflow_id is not None:
        query = query.where(Job.workflow_id == workflow_id)
    return await pages.newest_first(
        session, query, at=Job.created_at, key=Job.id, limit=limit, cursor=cursor
    )


async def cancel(session: AsyncSession, *, user: User, job_id: str) -> Job:
    """A waiting or running job becomes cancelled at once; a worker holding it lets go."""
    detail = await get(session, user=user, job_id=job_id)
    job = detail.job
    if job.status in FINAL_STATES:
        raise AlreadyFinished(f"The job has already {job.status}.")
    if not await queue.cancel(session, job_id=job.id, now=utcnow()):
        raise AlreadyFinished("The job finished in the meantime.")
    await session.refresh(job)
    if job.callback_url:
        await callbacks.enqueue(
            session,
            job_id=job.id,
            user_id=job.user_id,
            workflow_id=job.workflow_id,
            status=CANCELLED,
            result=None,
            error=None,
            url=job.callback_url,
        )
    return job


async def retry(session: AsyncSession, *, user: User, job_id: str) -> Job:
    """Replay a failed job from its last checkpoint; finished steps are not repeated."""
    job = (await get(session, user=user, job_id=job_id)).job
    if job.status != FAILED:
        raise NotRetryable(f"The job is {job.status}, not failed.")
    await queue.requeue(session, job)
    return job


async def replay_failed(
    session: AsyncSession,
    *,
    workflow_id: str | None = None,
    since: datetime | None = None,
    user_id: str | None = None,
) -> list[str]:
    """Operator replay: every failed job matching the filters goes back to the queue."""
    query = select(Job).where(Job.status == FAILED)
    if workflow_id is not None:
        query = query.where(Job.workflow_id == workflow_id)
    if since is not None:
        query = query.where(Job.finished_at >= since)
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    replayed = []
    for job in await session.scalars(query.order_by(Job.finished_at).with_for_update()):
        await queue.requeue(session, job)
        replayed.append(job.id)
    return replayed
