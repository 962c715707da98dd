"""Automatic rollback: a workflow's new version that fails where the one before it
worked is replaced by the one before it, audited and alerted.

About once a minute the scheduler looks at every workflow a newer version went live on
within `LEVQOR_ROLLBACK_WINDOW_S` (owners can turn this off per workflow). Once the new
version has `LEVQOR_ROLLBACK_MIN_RUNS` finished runs, it is rolled back when

- its share of failed runs reaches `LEVQOR_ROLLBACK_FAILURE_RATE` and is at least 25
  points above the previous version's last runs, or
- its median run takes three times the previous version's, and a second longer.

Only a forward change is judged: a rollback (to a lower version) is never itself rolled
back, so two bad versions cannot flip back and forth. `levqor rollback workflow` does it by
hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.audit import service as audit
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.errors import InvalidRequest, NotFound
from levqor.jobs import service as jobs
from levqor.jobs.service import VersionOutcomes
from levqor.ops import alerts
from levqor.periodic import TickTask, at_most_every
from levqor.workflows import service as workflows
from levqor.workflows.models import Workflow

WORSE_BY = 0.25
SLOWER_TIMES = 3.0
SLOWER_BY_S = 1.0
PREVIOUS_RUNS = 50


@dataclass(frozen=True)
class RolledBack:
    workflow_id: str
    from_version: int
    to_version: int
    reason: str


def why_worse(new: VersionOutcomes, old: VersionOutcomes, settings: Settings) -> str | None:
    """Why the new version is worse than the old, or None."""
    if new.finished < settings.rollback_min_runs:
        return None
    if (
        new.failure_rate >= settings.rollback_failure_rate
        and new.failure_rate >= old.failure_rate + WORSE_BY
    ):
        return (
            f"{new.failed} of its {new.finished} runs failed ({new.failure_rate:.0%}); the "
            f"version before failed {old.failure_rate:.0%} of its last {old.finished}"
        )
    if (
        new.median_s is not None
        and old.median_s is not None
        and old.finished >= settings.rollback_min_runs
        and new.median_s >= SLOWER_TIMES * old.median_s
        and new.median_s >= old.median_s + SLOWER_BY_S
    ):
        return f"its median run took {new.median_s:.1f} s; the version before, {old.median_s:.1f} s"
    return None


async def check(db: Database, settings: Settings, now: datetime | None = None) -> list[RolledBack]:
    """Judge the workflows a new version went live on lately; roll back the failing ones."""
    now = now or utcnow()
    done: list[RolledBack] = []
    async with db.session(write=True) as session, session.begin():
        since = now - timedelta(seconds=settings.rollback_window_s)
        for workflow in await workflows.live_since(session, since=since):
            rolled = await _judge(session, settings, workflow)
            if rolled is not None:
                done.append(rolled)
    if done:
        await alerts.deliver_due(db, settings)
    return done


async def _judge(
    session: AsyncSession, settings: Settings, workflow: Workflow
) -> RolledBack | None:
    assert workflow.previous_version is not None
    assert workflow.current_since is not None
    new = await jobs.version_outcomes(
        session,
        workflow_id=workflow.id,
        version=workflow.current_version,
        since=workflow.current_since,
    )
    old = await jobs.version_outcomes(
        session,
        workflow_id=workflow.id,
        version=workflow.previous_version,
        before=workflow.current_since,
        limit=PREVIOUS_RUNS,
    )
    reason = why_worse(new, old, settings)
    if reason is None:
        return None
    return await roll_back(
        session, settings, workflow, workflow.previous_version, reason, actor="system"
    )


async def roll_back(
    session: AsyncSession,
    settings: Settings,
    workflow: Workflow,
    to_version: int,
    reason: str,
    *,
    actor: str,
) -> RolledBack:
    """Make `to_version` current again, audited and alerted."""
    from_version = workflow.current_version
    await workflows.restore_version(session, workflow_id=workflow.id, version=to_version)
    await audit.record(
        session,
        actor=actor,
        action="workflow_rolled_back",
        object_id=workflow.id,
        detail={"from_version": from_version, "to_version": to_version, "reason": reason},
    )
    await alerts.record(
        session,
        settings,
        "warning",
        f"Workflow {workflow.name} rolled back to version {to_version}",
        f"Version {from_version} of {workflow.id} was replaced by version {to_version}: {reason}.",
    )
    return RolledBack(workflow.id, from_version, to_version, reason)


async def by_hand(
    session: AsyncSession, settings: Settings, workflow_id: str, to_version: int | None
) -> RolledBack:
    """`levqor rollback workflow`: `to_version`, or the version before the current one."""
    workflow = await session.get(Workflow, workflow_id)
    if workflow is None or workflow.deleted_at is not None:
        raise NotFound(f"No such workflow: {workflow_id}")
    target = to_version or workflow.previous_version or workflow.current_version - 1
    if target < 1 or target == workflow.current_version:
        raise InvalidRequest(f"{workflow_id} has no other version to go back to.")
    return await roll_back(session, settings, workflow, target, "rolled back by hand", actor="cli")


def tick_task(db: Database, settings: Settings, *, every_s: float = 60) -> TickTask:
    async def watch() -> object:
        return await check(db, settings)

    return at_most_every(every_s, watch)
