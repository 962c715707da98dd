"""Request and response bodies of the workflows API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from levqor.workflows.definition import WorkflowDefinition


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: WorkflowDefinition


class WorkflowRead(BaseModel):
    id: str
    name: str
    version: int = Field(description="The current version.")
    trigger: str
    definition: dict[str, Any]
    webhook_url: str | None = Field(None, description="Set when the trigger is a webhook.")
    created_at: datetime
    updated_at: datetime


class VersionRead(BaseModel):
    version: int
    current: bool
    definition: dict[str, Any]
    created_at: datetime


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
