"""Workflow routes: thin; parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from levqor.accounts.api_deps import CurrentUser, IdempotencyDep
from levqor.deps import Cursor, Limit, RuntimeDep, SessionDep
from levqor.runtime import Runtime
from levqor.types import Page
from levqor.workflows import service
from levqor.workflows.planner import service as planner_service
from levqor.workflows.schemas import (
    PlanIn,
    PlanInputRead,
    PlanRead,
    RollbackIn,
    ScheduleIn,
    ScheduleRead,
    SwitchIn,
    VersionRead,
    WorkflowIn,
    WorkflowRead,
)
from levqor.workflows.service import WorkflowState

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])


def _read(state: WorkflowState, runtime: Runtime) -> WorkflowRead:
    workflow = state.workflow
    webhook_url = None
    if workflow.trigger_type == "webhook":
        token = service.webhook_token(workflow, runtime.cipher)
        webhook_url = f"{runtime.settings.public_url}/hooks/{workflow.id}/{token}"
    schedule = None
    if workflow.trigger_type == "schedule":
        schedule = ScheduleRead(
            enabled=workflow.schedule_enabled,
            paused=workflow.schedule_paused_reason is not None,
            paused_reason=workflow.schedule_paused_reason,
            failures_in_a_row=workflow.schedule_failures,
        )
    return WorkflowRead(
        id=workflow.id,
        name=workflow.name,
        version=state.current.version,
        trigger=workflow.trigger_type,
        definition=state.current.definition,
        webhook_url=webhook_url,
        schedule=schedule,
        auto_rollback=workflow.auto_rollback,
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkflowRead)
async def create_workflow(
    body: WorkflowIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency: IdempotencyDep,
) -> Any:
    if (replayed := await idempotency.replay()) is not None:
        return replayed
    state = await service.create(
        session, user=principal.user, definition=body.definition, cipher=runtime.cipher
    )
    answer = _read(state, runtime).model_dump(mode="json")
    await idempotency.remember(status.HTTP_201_CREATED, answer)
    return answer


@router.get("")
async def list_workflows(
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[WorkflowRead]:
    states, next_cursor = await service.list_for_user(
        session, user=principal.user, limit=limit, cursor=cursor
    )
    return Page(data=[_read(state, runtime) for state in states], next_cursor=next_cursor)


@router.get("/{workflow_id}")
async def get_workflow(
    workflow_id: str, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> WorkflowRead:
    state = await service.get_state(session, user=principal.user, workflow_id=workflow_id)
    return _read(state, runtime)


@router.put("/{workflow_id}")
async def update_workflow(
    workflow_id: str,
    body: WorkflowIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> WorkflowRead:
    state = await service.update(
        session, user=principal.user, workflow_id=workflow_id, definition=body.definition
    )
    return _read(state, runtime)


@router.get("/{workflow_id}/versions")
async def list_versions(
    workflow_id: str,
    principal: CurrentUser,
    session: SessionDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[VersionRead]:
    workflow, versions, next_cursor = await service.list_versions(
        session, user=principal.user, workflow_id=workflow_id, limit=limit, cursor=cursor
    )
    return Page(
        data=[
            VersionRead(
                version=version.version,
                current=version.version == workflow.current_version,
                definition=version.definition,
                created_at=version.created_at,
            )
            for version in versions
        ],
        next_cursor=next_cursor,
    )


@router.post("/{workflow_id}/rollback")
async def rollback_workflow(
    workflow_id: str,
    body: RollbackIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> WorkflowRead:
    state = await service.rollback(
        session, user=principal.user, workflow_id=workflow_id, version=body.version
    )
    return _read(state, runtime)


@router.post("/{workflow_id}/webhook/rotate")
async def rotate_webhook(
    workflow_id: str, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> WorkflowRead:
    state = await service.rotate_webhook_token(
        session, user=principal.user, workflow_id=workflow_id, cipher=runtime.cipher
    )
    return _read(state, runtime)


@router.put("/{workflow_id}/schedule")
async def switch_schedule(
    workflow_id: str,
    body: ScheduleIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> WorkflowRead:
    """Turn the schedule off (`enabled: false`) or on again; on also resumes a schedule
    paused after failing fires. 409 when the workflow has no schedule."""
    state = await service.switch_schedule(
        session, user=principal.user, workflow_id=workflow_id, enabled=body.enabled
    )
    return _read(state, runtime)


@router.put("/{workflow_id}/auto-rollback")
async def switch_auto_rollback(
    workflow_id: str,
    body: SwitchIn,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> WorkflowRead:
    """Whether a new version that fails where the one before worked is rolled back
    automatically (on by default)."""
    state = await service.switch_auto_rollback(
        session, user=principal.user, workflow_id=workflow_id, enabled=body.enabled
    )
    return _read(state, runtime)


@router.delete("/{workflow_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_workflow(
    workflow_id: str, principal: CurrentUser, session: SessionDep
) -> Response:
    await service.delete(session, user=principal.user, workflow_id=workflow_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


plan_router = APIRouter(prefix="/api/v1", tags=["workflows"])


@plan_router.post("/plan", status_code=status.HTTP_201_CREATED)
async def plan_workflow(
    body: PlanIn, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> PlanRead:
    """Plain words -> a validated workflow draft (not saved). While the spend guard
    pauses your LLM calls, the rules planner answers instead."""
    drafted = await planner_service.plan(
        session,
        settings=runtime.settings,
        user=principal.user,
        prompt=body.prompt,
        answers=body.answers,
    )
    return PlanRead(
        planner=drafted.planner,
        definition=drafted.definition,
        notes=drafted.notes,
        not_understood=drafted.not_understood,
        inputs=[PlanInputRead(**vars(needed)) for needed in drafted.inputs],
        usage=drafted.usage,
    )
