"""Request and response bodies of the workflows API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from levqor.workflows.definition import WorkflowDefinition

INPUT_NAME = r"^[a-z_][a-z0-9_]{0,127}$"
Answer = Annotated[str, StringConstraints(max_length=2000)]


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: WorkflowDefinition


class ScheduleRead(BaseModel):
    """A schedule's switch and health: it pauses after failing several fires in a row."""

    enabled: bool = Field(description="The owner's switch (`PUT .../schedule`).")
    paused: bool
    paused_reason: str | None = Field(
        None, description="Why; saving a new version or enabling the schedule resumes it."
    )
    failures_in_a_row: int


class WorkflowRead(BaseModel):
    id: str
    name: str
    version: int = Field(description="The current version.")
    trigger: str
    definition: dict[str, Any]
    webhook_url: str | None = Field(None, description="Set when the trigger is a webhook.")
    schedule: ScheduleRead | None = Field(None, description="Set when the trigger is a schedule.")
    auto_rollback: bool = Field(
        True,
        description="A new version that fails where the one before worked is rolled back "
        "(`PUT .../auto-rollback`).",
    )
    created_at: datetime
    updated_at: datetime


class SwitchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="false: the schedule stops firing; true: it fires again.")


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
    answers: dict[Annotated[str, StringConstraints(pattern=INPUT_NAME)], Answer] = Field(
        default_factory=dict,
        max_length=50,
        description="Details the draft asked for, by input name (from a previous answer's "
        "`inputs`).",
        examples=[{"telegram_chat_id": "@my_channel"}],
    )


class PlanInputRead(BaseModel):
    """A detail the request did not give: ask for it, then plan again with `answers`."""

    name: str = Field(description="The key to answer it by in `answers`.")
    step: str = Field(description="The step that needs it.")
    param: str = Field(description="The step's parameter it fills.")
    question: str
    reason: str = Field(description="Why it is asked.")
    example: str


class PlanRead(BaseModel):
    """A draft: save it with `POST /api/v1/workflows`."""

    planner: str = Field(description="`llm` or `rules`.")
    definition: dict[str, Any]
    notes: list[str] = Field(description="What is left to do, e.g. credentials to add.")
    not_understood: list[str] = Field(description="Parts of the request left out.")
    inputs: list[PlanInputRead] = Field(
        description="Details still missing. Until answered, each step reads its detail "
        "from the run's input (`{{ input.<name> }}`), so a run without it fails naming it."
    )
    usage: dict[str, Any] | None = Field(None, description="LLM tokens and cost, if used.")
