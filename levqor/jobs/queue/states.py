"""The values the executor, the writer and the queue pass each other: frozen, typed."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from levqor import metrics
from levqor.jobs.models import FAILED, HELD, QUEUED, RETRYING, SUCCEEDED


@dataclass(frozen=True)
class Claimed:
    """A job a worker took, with what running it needs."""

    id: str
    user_id: str
    workflow_id: str
    workflow_version: int
    input: Any
    attempts: int
    callback_url: str | None = None
    crashes: int = 0
    replays: int = 0


@dataclass(frozen=True)
class ClaimRequest:
    """What a claim asks for: up to `limit` due jobs under `worker_id`'s lease, at most
    `max_running_per_user` running per user and never every slot of the fleet (this
    claimer's `concurrency` plus that of the workers that beat since `alive_since`,
    less one)."""

    worker_id: str
    limit: int
    lease: timedelta
    now: datetime
    max_running_per_user: int
    concurrency: int
    alive_since: datetime


class Outcome(enum.Enum):
    """What a step's end means for its run."""

    NEXT = "next"  # checkpointed: the run goes on to the next step
    STOP = "stop"  # the run stops here (finished, failed, waiting, or no longer ours)


@dataclass(frozen=True)
class JobState:
    """A job's new state; writing one hands the job back from its worker."""

    status: str
    result: Any = None
    error: str | None = None
    run_at: datetime | None = None  # None keeps the job's run_at
    finished_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.finished_at is not None


# Each state is built once, by the worker that decides it: counted here.


def succeeded(result: Any, now: datetime) -> JobState:
    metrics.labelled(metrics.JOBS, "succeeded").inc()
    return JobState(SUCCEEDED, result=result, finished_at=now)


def failed(error: str, now: datetime) -> JobState:
    """Final failure: the job goes to the dead-letter queue."""
    metrics.labelled(metrics.JOBS, "failed").inc()
    return JobState(FAILED, error=error, finished_at=now)


def retrying(run_at: datetime, error: str) -> JobState:
    metrics.labelled(metrics.JOBS, "retrying").inc()
    return JobState(RETRYING, error=error, run_at=run_at)


def held(until: datetime, reason: str) -> JobState:
    """The run waits, holding no worker and losing nothing, for a pause outside it to end
    (`until`, or sooner if it is lifted); `reason` is what the user sees."""
    metrics.labelled(metrics.JOBS, "held").inc()
    return JobState(HELD, error=reason, run_at=until)


def paused(run_at: datetime) -> JobState:
    """A delay step: the job waits, holding no worker, and resumes after it."""
    return JobState(QUEUED, run_at=run_at)


@dataclass(frozen=True)
class StepCheckpoint:
    """A step's stored outcome: what a resumed run reads back instead of running it."""

    step_id: str
    position: int
    status: str
    output: Any
    error: str | None
    attempts: int
    started_at: datetime
    finished_at: datetime


STEP_FIELDS = tuple(StepCheckpoint.__dataclass_fields__)


@dataclass(frozen=True)
class JobWrite:
    """What a worker writes for one job at once: a step checkpoint, a new state, or both."""

    job_id: str
    step: StepCheckpoint | None = None
    state: JobState | None = None
    callback: bool = False  # the job has a callback URL: a final state queues its delivery
