"""The built-in steps that need no outside service: transform, filter, delay, http_request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from levqor.connectors.base import Action, Connector


class TransformParams(RootModel[dict[str, Any]]):
    """Any object; every string in it is a template."""


class FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: Any = Field(description="A template that renders true or false.")


class DelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=30 * 24 * 3600)


class HttpRequestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(min_length=1, max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    timeout: float = Field(30, gt=0, le=300)


CONNECTORS = (
    Connector(
        "transform",
        {"build": Action("build", TransformParams, "Build a new object from templates.")},
        "Reshape data between steps.",
    ),
    Connector(
        "filter",
        {"check": Action("check", FilterParams, "Stop the run (succeeded) when false.")},
        "Continue only when a condition holds.",
    ),
    Connector(
        "delay",
        {"wait": Action("wait", DelayParams, "Wait without holding a worker.")},
        "Pause the run.",
    ),
    Connector(
        "http_request",
        {"request": Action("request", HttpRequestParams, "Call any HTTP API.")},
        "Send an HTTP request.",
    ),
)
