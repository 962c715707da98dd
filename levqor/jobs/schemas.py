"""Request and response bodies of the runs and jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl

from levqor.jsonvalues import StorableJson
from levqor.types import Page

Priority = Literal["low", "normal", "high"]


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: StorableJson = Field(default_factory=dict)
    priority: Priority = "normal"
    run_at: AwareDatetime | None = None
    callback_url: HttpUrl | None = None


class IntakeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str
    payload: StorableJson = Field(default_factory=dict)
    priority: Priority = "normal"
    callback_url: HttpUrl | None = None


class RunQueued(BaseModel):
    job_id: str
    status: Literal["queued"] = "queued"


class StepRead(BaseModel):
    id: str
    status: str
    output: Any
    error: str | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


class JobRead(BaseModel):
    job_id: str
    workflow_id: str
    workflow_version: int
    status: str
    attempts: int
    next_attempt_at: datetime | None = Field(None, description="Set while retrying.")
    result: Any = None
    error: str | None = None
    steps: list[StepRead] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


JobPage = Page[JobRead]


class CallbackSecretRead(BaseModel):
    secret: str = Field(description="Verify `webhook-signature` with this (Standard Webhooks).")


class CallbackAttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class CallbackRead(BaseModel):
    id: str = Field(description="The `webhook-id` header, the same on every try.")
    url: str
    status: str
    attempts: list[CallbackAttemptRead]
    next_attempt_at: datetime | None
    delivered_at: datetime | None
