"""Runs and jobs routes: thin; parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, BackgroundTasks, Query, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors, metrics
from levqor.accounts.api_deps import CurrentUser, IdempotencyDep, enforce
from levqor.accounts.kit import Principal
from levqor.accounts.ratelimit import Policy
from levqor.deps import Cursor, Limit, RuntimeDep, SessionDep
from levqor.idempotency.api import Idempotency
from levqor.jobs import callbacks, service
from levqor.jobs.models import HELD, RETRYING, Job, JobStep
from levqor.jobs.schemas import (
    CallbackAttemptRead,
    CallbackRead,
    CallbackSecretRead,
    IntakeIn,
    JobPage,
    JobRead,
    RunIn,
    RunQueued,
    StepRead,
)
from levqor.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["runs"])
hooks_router = APIRouter(tags=["triggers"])
Status = Annotated[
    str | None,
    Query(pattern="^(queued|running|succeeded|retrying|failed|cancelled)$"),
]


def _read(job: Job, steps: list[JobStep] | None = None) -> JobRead:
    return JobRead(
        job_id=job.id,
        workflow_id=job.workflow_id,
        workflow_version=job.workflow_version,
        status=job.status,
        attempts=job.attempts,
        next_attempt_at=job.run_at if job.status in (RETRYING, HELD) else None,
        result=job.result,
        error=job.error,
        steps=[
            StepRead(
                id=step.step_id,
                status=step.status,
                output=step.output,
                error=step.error,
                attempts=step.attempts,
                started_at=step.started_at,
                finished_at=step.finished_at,
            )
            for step in steps or []
        ],
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def _start(
    workflow_id: str,
    run: RunIn,
    principal: Principal,
    session: AsyncSession,
    runtime: Runtime,
    idempotency: Idempotency,
    background: BackgroundTasks,
) -> Any:
    if (replayed := await idempotency.replay()) is not None:
        return replayed
    job = await service.start_run(
        session,
        user=principal.user,
        workflow_id=workflow_id,
        input=run.input,
        priority=run.priority,
        run_at=run.run_at,
        callback_url=str(run.callback_url) if run.callback_url else None,
        cost=runtime.settings.run_cost_credits,
        intake=runtime.intake,
    )
    answer = RunQueued(job_id=job.id).model_dump()
    await idempotency.remember(status.HTTP_202_ACCEPTED, answer)
    background.add_task(runtime.job_wakeup.set)  # after the commit: a worker here starts it
    return answer


@router.post("/workflows/{workflow_id}/runs", status_code=202, response_model=RunQueued)
async def run_workflow(
    workflow_id: str,
    body: RunIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency: IdempotencyDep,
    background: BackgroundTasks,
) -> Any:
    return await _start(workflow_id, body, principal, session, runtime, idempotency, background)


@router.post("/intake", status_code=202, response_model=RunQueued)
async def intake(
    body: IntakeIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency: IdempotencyDep,
    background: BackgroundTasks,
) -> Any:
    run = RunIn(input=body.payload, priority=body.priority, callback_url=body.callback_url)
    return await _start(body.workflow, run, principal, session, runtime, idempotency, background)


@router.get("/jobs")
async def list_jobs(
    principal: CurrentUser,
    session: SessionDep,
    status_filter: Annotated[Status, Query(alias="status")] = None,
    workflow_id: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobPage:
    jobs, next_cursor = await service.list_for_user(
        session,
        user=principal.user,
        status=status_filter,
        workflow_id=workflow_id,
        limit=limit,
        cursor=cursor,
    )
    return JobPage(data=[_read(job) for job in jobs], next_cursor=next_cursor)


@router.get("/jobs/{job_id}")
@router.get("/status/{job_id}", include_in_schema=False)
async def get_job(job_id: str, principal: CurrentUser, session: SessionDep) -> JobRead:
    detail = await service.get(session, user=principal.user, job_id=job_id)
    return _read(detail.job, detail.steps)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, principal: CurrentUser, session: SessionDep) -> JobRead:
    return _read(await service.cancel(session, user=principal.user, job_id=job_id))


@router.post("/jobs/{job_id}/retry", status_code=202)
async def retry_job(
    job_id: str,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> JobRead:
    job = await service.retry(session, user=principal.user, job_id=job_id)
    background.add_task(runtime.job_wakeup.set)
    return _read(job)


@hooks_router.post("/hooks/{workflow_id}/{token}", status_code=202)
async def webhook(
    workflow_id: str,
    token: str,
    request: Request,
    runtime: RuntimeDep,
) -> dict[str, str]:
    """Start a run of a webhook-triggered workflow; any JSON body becomes its input."""
    await enforce(
        request,
        runtime,
        f"hook:{workflow_id}",
        Policy("webhook", runtime.settings.rate_limit_webhook_per_minute),
    )
    try:
        payload = await _json_body(request)
        job_id = await service.start_from_webhook(
            runtime.db,
            workflow_id=workflow_id,
            token=token,
            payload=payload,
            cost=runtime.settings.run_cost_credits,
            intake=runtime.intake,
        )
    except errors.LevqorError:
        metrics.labelled(metrics.WEBHOOKS, "refused").inc()
        raise
    metrics.labelled(metrics.WEBHOOKS, "accepted").inc()
    runtime.job_wakeup.set()
    return {"job_id": job_id, "status": "queued"}


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidJson("The webhook body must be JSON.") from exc


@router.get("/callbacks/secret")
async def callback_secret(
    principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> CallbackSecretRead:
    secret = await callbacks.signing_secret(
        session, user_id=principal.user.id, cipher=runtime.cipher
    )
    return CallbackSecretRead(secret=secret)


@router.post("/callbacks/secret/rotate")
async def rotate_callback_secret(
    principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> CallbackSecretRead:
    secret = await callbacks.signing_secret(
        session, user_id=principal.user.id, cipher=runtime.cipher, rotate=True
    )
    return CallbackSecretRead(secret=secret)


@router.get("/jobs/{job_id}/callbacks")
async def job_callbacks(
    job_id: str, principal: CurrentUser, session: SessionDep
) -> list[CallbackRead]:
    detail = await service.get(session, user=principal.user, job_id=job_id)
    return [
        CallbackRead(
            id=delivery.id,
            url=delivery.url,
            status=delivery.status,
            next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
            delivered_at=delivery.delivered_at,
            attempts=[CallbackAttemptRead.model_validate(a) for a in attempts],
        )
        for delivery, attempts in await callbacks.for_job(session, job_id=detail.job.id)
    ]


@router.get("/dead-letters")
async def dead_letters(
    principal: CurrentUser,
    session: SessionDep,
    workflow_id: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobPage:
    """The dead-letter queue: failed jobs, newest first, paged like `GET /jobs`."""
    return await list_jobs(principal, session, "failed", workflow_id, limit, cursor)
