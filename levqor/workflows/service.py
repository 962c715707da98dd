"""Workflows and their versions. Plain async functions; they flush, never commit."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import MultiFernet
from sqlalchemy import bindparam, select, tuple_
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor import errors
from levqor.accounts.models import User
from levqor.accounts.tokens import sha256_hex
from levqor.db import pages
from levqor.db.base import utcnow
from levqor.workflows.definition import WorkflowDefinition, check
from levqor.workflows.models import Workflow, WorkflowVersion, workflow_versions_table


@dataclass(frozen=True)
class WorkflowState:
    """A workflow with its current version."""

    workflow: Workflow
    current: WorkflowVersion


async def create(
    session: AsyncSession, *, user: User, definition: WorkflowDefinition, cipher: MultiFernet
) -> WorkflowState:
    check(definition)
    token = secrets.token_urlsafe(24)
    workflow = Workflow(
        user_id=user.id,
        name=definition.name,
        current_version=1,
        current_since=utcnow(),
        trigger_type=definition.trigger.type,
        webhook_token_hash=sha256_hex(token),
        webhook_token_encrypted=cipher.encrypt(token.encode()).decode(),
    )
    session.add(workflow)
    await session.flush()
    version = WorkflowVersion(workflow_id=workflow.id, version=1, definition=definition.dump())
    session.add(version)
    await session.flush()
    return WorkflowState(workflow, version)


async def get(
    session: AsyncSession, *, user: User, workflow_id: str, for_update: bool = False
) -> Workflow:
    """The user's workflow; NotFound for a deleted one or another user's (never leak it)."""
    query = select(Workflow).where(
        Workflow.id == workflow_id, Workflow.user_id == user.id, Workflow.deleted_at.is_(None)
    )
    workflow = await session.scalar(query.with_for_update() if for_update else query)
    if workflow is None:
        raise errors.NotFound("No such workflow.")
    return workflow


async def get_state(session: AsyncSession, *, user: User, workflow_id: str) -> WorkflowState:
    workflow = await get(session, user=user, workflow_id=workflow_id)
    return WorkflowState(workflow, await _version(session, workflow, workflow.current_version))


async def _version(session: AsyncSession, workflow: Workflow, number: int) -> WorkflowVersion:
    version = await session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.version == number
        )
    )
    if version is None:
        raise errors.NotFound(f"Workflow {workflow.id} has no version {number}.")
    return version


async def list_for_user(
    session: AsyncSession, *, user: User, limit: int = 100, cursor: str | None = None
) -> tuple[list[WorkflowState], str | None]:
    """A page of the user's workflows, newest first, each with its current version."""
    workflows, next_cursor = await pages.newest_first(
        session,
        select(Workflow).where(Workflow.user_id == user.id, Workflow.deleted_at.is_(None)),
        at=Workflow.created_at,
        key=Workflow.id,
        limit=limit,
        cursor=cursor,
    )
    current = {
        version.workflow_id: version
        for version in await session.scalars(
            select(WorkflowVersion).where(
                tuple_(WorkflowVersion.workflow_id, WorkflowVersion.version).in_(
                    [(workflow.id, workflow.current_version) for workflow in workflows]
                )
            )
        )
    }
    return [WorkflowState(workflow, current[workflow.id]) for workflow in workflows], next_cursor


async def update(
    session: AsyncSession, *, user: User, workflow_id: str, definition: WorkflowDefinition
) -> WorkflowState:
    """Save a new immutable version and make it current."""
    check(definition)
    workflow = await get(session, user=user, workflow_id=workflow_id, for_update=True)
    newest = await session.scalar(
        select(WorkflowVersion.version)
        .where(WorkflowVersion.workflow_id == workflow.id)
        .order_by(WorkflowVersion.version.desc())
        .limit(1)
    )
    version = WorkflowVersion(
        workflow_id=workflow.id, version=(newest or 0) + 1, definition=definition.dump()
    )
    session.add(version)
    _make_current(workflow, version.version, definition)
    await session.flush()
    return WorkflowState(workflow, version)


def _make_current(workflow: Workflow, version: int, definition: WorkflowDefinition) -> None:
    """A new current version also starts its schedule afresh (a paused one resumes)."""
    if workflow.current_version is not None and workflow.current_version != version:
        workflow.previous_version = workflow.current_version
    workflow.current_since = utcnow()
    workflow.current_version = version
    workflow.name = definition.name
    workflow.trigger_type = definition.trigger.type
    workflow.schedule_failures = 0
    workflow.schedule_paused_reason = None


async def list_versions(
    session: AsyncSession,
    *,
    user: User,
    workflow_id: str,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[Workflow, list[WorkflowVersion], str | None]:
    """The workflow and a page of its versions, newest first."""
    workflow = await get(session, user=user, workflow_id=workflow_id)
    versions, next_cursor = await pages.newest_first(
        session,
        select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow.id),
        at=WorkflowVersion.created_at,
        key=WorkflowVersion.id,
        limit=limit,
        cursor=cursor,
    )
    return workflow, versions, next_cursor


async def rollback(
    session: AsyncSession, *, user: User, workflow_id: str, version: int
) -> WorkflowState:
    """Make an earlier version current again (versions themselves never change)."""
    workflow = await get(session, user=user, workflow_id=workflow_id, for_update=True)
    target = await _version(session, workflow, version)
    definition = WorkflowDefinition.model_validate(target.definition)
    _make_current(workflow, target.version, definition)
    await session.flush()
    return WorkflowState(workflow, target)


async def restore_version(session: AsyncSession, *, workflow_id: str, version: int) -> Workflow:
    """Make `version` current again on the operator's or the watchdog's behalf (no owner
    check: the caller decided)."""
    workflow = await session.get(Workflow, workflow_id, with_for_update=True)
    if workflow is None or workflow.deleted_at is not None:
        raise errors.NotFound("No such workflow.")
    target = await _version(session, workflow, version)
    _make_current(workflow, target.version, WorkflowDefinition.model_validate(target.definition))
    await session.flush()
    return workflow


async def switch_auto_rollback(
    session: AsyncSession, *, user: User, workflow_id: str, enabled: bool
) -> WorkflowState:
    """The owner's flag: may the watchdog roll a failing new version back?"""
    state = await get_state(session, user=user, workflow_id=workflow_id)
    state.workflow.auto_rollback = enabled
    await session.flush()
    return state


async def live_since(session: AsyncSession, *, since: datetime) -> list[Workflow]:
    """Workflows a new (higher) version went live on since `since`, auto rollback on."""
    rows = await session.scalars(
        select(Workflow).where(
            Workflow.deleted_at.is_(None),
            Workflow.auto_rollback.is_(True),
            Workflow.current_since >= since,
            Workflow.previous_version.is_not(None),
            Workflow.current_version > Workflow.previous_version,
        )
    )
    return list(rows)


async def delete(session: AsyncSession, *, user: User, workflow_id: str) -> None:
    """Hide the workflow; its versions (and the runs that name them) stay readable."""
    workflow = await get(session, user=user, workflow_id=workflow_id, for_update=True)
    workflow.deleted_at = utcnow()
    await session.flush()


async def rotate_webhook_token(
    session: AsyncSession, *, user: User, workflow_id: str, cipher: MultiFernet
) -> WorkflowState:
    """A new secret webhook URL; the old one stops working at once."""
    workflow = await get(session, user=user, workflow_id=workflow_id, for_update=True)
    token = secrets.token_urlsafe(24)
    workflow.webhook_token_hash = sha256_hex(token)
    workflow.webhook_token_encrypted = cipher.encrypt(token.encode()).decode()
    await session.flush()
    return WorkflowState(workflow, await _version(session, workflow, workflow.current_version))


@dataclass(frozen=True)
class WebhookTarget:
    """What a webhook call needs of its workflow: who pays, and which version runs."""

    id: str
    user_id: str
    current_version: int


# Built once: the webhook intake is the hottest read of the product, and building a
# statement costs more than running this one.
_WEBHOOK_TARGET = select(
    Workflow.id,
    Workflow.user_id,
    Workflow.current_version,
    Workflow.trigger_type,
    Workflow.webhook_token_hash,
).where(Workflow.id == bindparam("workflow_id"), Workflow.deleted_at.is_(None))


async def webhook_target(
    connection: AsyncConnection | AsyncSession, *, workflow_id: str, token: str
) -> WebhookTarget:
    """The workflow a webhook call names; NotFound alike for any wrong part of the URL.

    Columns, not the ORM entity: no session, and none of the encrypted fields decrypted."""
    row = (await connection.execute(_WEBHOOK_TARGET, {"workflow_id": workflow_id})).first()
    expected = row.webhook_token_hash if row is not None else sha256_hex("")
    matches = hmac.compare_digest(expected, sha256_hex(token))
    if row is None or not matches or row.trigger_type != "webhook":
        raise errors.NotFound("No such webhook.")
    return WebhookTarget(row.id, row.user_id, row.current_version)


def webhook_token(workflow: Workflow, cipher: MultiFernet) -> str:
    return cipher.decrypt(workflow.webhook_token_encrypted.encode()).decode()


async def definition_of(
    session: AsyncSession, *, workflow_id: str, version: int
) -> WorkflowDefinition:
    """A version's definition, whatever the workflow's state (runs name their version)."""
    versions = workflow_versions_table.c
    stored = await session.scalar(
        select(versions.definition).where(
            versions.workflow_id == workflow_id, versions.version == version
        )
    )
    if stored is None:
        raise errors.NotFound(f"Workflow {workflow_id} has no version {version}.")
    return WorkflowDefinition.model_validate(stored)


@dataclass(frozen=True)
class ScheduledWorkflow:
    workflow_id: str
    user_id: str
    cron: str
    timezone: str
    since: datetime  # the current version's creation
    failures: int = 0  # fires failed in a row


async def list_scheduled(session: AsyncSession) -> list[ScheduledWorkflow]:
    """Every live workflow whose current version has a schedule trigger."""
    rows = await session.execute(
        select(
            Workflow.id,
            Workflow.user_id,
            WorkflowVersion.definition,
            WorkflowVersion.created_at,
            Workflow.schedule_failures,
        )
        .join(
            WorkflowVersion,
            (WorkflowVersion.workflow_id == Workflow.id)
            & (WorkflowVersion.version == Workflow.current_version),
        )
        .where(
            Workflow.trigger_type == "schedule",
            Workflow.deleted_at.is_(None),
            Workflow.schedule_paused_reason.is_(None),
            Workflow.schedule_enabled.is_(True),
        )
    )
    return [
        ScheduledWorkflow(
            workflow_id,
            user_id,
            definition["trigger"]["cron"],
            definition["trigger"].get("timezone", "UTC"),
            since,
            failures,
        )
        for workflow_id, user_id, definition, since, failures in rows
    ]


async def switch_schedule(
    session: AsyncSession, *, user: User, workflow_id: str, enabled: bool
) -> WorkflowState:
    """The owner turns the workflow's schedule on or off. Turning it on also resumes a
    schedule paused after failing fires (the owner has looked at it)."""
    state = await get_state(session, user=user, workflow_id=workflow_id)
    workflow = state.workflow
    if workflow.trigger_type != "schedule":
        raise errors.Conflict(
            f"workflow {workflow.id} is triggered by {workflow.trigger_type}, not a schedule"
        )
    workflow.schedule_enabled = enabled
    if enabled:
        workflow.schedule_failures = 0
        workflow.schedule_paused_reason = None
    await session.flush()
    return state


async def schedule_failed(
    session: AsyncSession, *, workflow_id: str, reason: str, pause_after: int
) -> bool:
    """Count a failed fire of the workflow's schedule; past `pause_after` in a row the
    schedule pauses with `reason` until a new version is saved. Whether it paused."""
    workflow = await session.get(Workflow, workflow_id, with_for_update=True)
    if workflow is None:
        return False
    workflow.schedule_failures += 1
    if workflow.schedule_failures >= pause_after:
        workflow.schedule_paused_reason = (
            f"paused after {workflow.schedule_failures} failed fires in a row; the last: {reason}"
        )[:1000]
    await session.flush()
    return workflow.schedule_paused_reason is not None


async def schedule_fired(session: AsyncSession, *, workflow_id: str) -> None:
    """A fire went through: the count of failures in a row starts again."""
    await session.execute(
        sql_update(Workflow)
        .where(Workflow.id == workflow_id)
        .values(schedule_failures=0, updated_at=Workflow.updated_at)  # not a user's edit
    )
