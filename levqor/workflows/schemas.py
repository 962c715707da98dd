"""Request and response bodies of the workflows API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from levqor.workflows.definition import WorkflowDefinition


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: WorkflowDefinition


class ScheduleRead(BaseModel):
    """A schedule's health: it pauses after failing several fires in a row."""

    paused: bool
    paused_reason: str | None = Field(None, description="Why; saving a new version resumes.")
    failures_in_a_row: int


class WorkflowRead(BaseModel):
    id: str
    name: str
    version: int = Field(description="The current version.")
    trigger: str
    definition: dict[str, Any]
    webhook_url: str | None = Field(None, description="Set when the trigger is a webhook.")
    schedule: ScheduleRead | None = Field(None, description="Set when the trigger is a schedule.")
    created_at: datetime
    updated_at: datetime


class VersionRead(BaseModel):
    version: int
    current: bool
    definition: dict[str, Any]
    created_at: datetime


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1)


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=3, max_length=2000, description="The automation, in words.")


class PlanRead(BaseModel):
    """A draft: save it with `POST /api/v1/workflows`."""

    planner: str = Field(description="`llm` or `rules`.")
    definition: dict[str, Any]
    notes: list[str] = Field(description="What is left to do, e.g. credentials to add.")
    not_understood: list[str] = Field(description="Parts of the request left out.")
    usage: dict[str, Any] | None = Field(None, description="LLM tokens and cost, if used.")
