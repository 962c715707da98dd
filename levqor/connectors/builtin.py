"""The built-in steps that need no outside service: transform, filter, delay, http_request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, RootModel

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext
from levqor.connectors.errors import Reschedule, StopRun
from levqor.jsonvalues import is_true


class TransformParams(RootModel[dict[str, Any]]):
    """Any object; every string in it is a template."""


class FilterParams(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    condition: Any = Field(description="A template that renders true or false.")


class DelayParams(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=30 * 24 * 3600)


MAX_REDIRECTS = 5


class HttpRequestParams(ConnectorModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(min_length=1, max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    timeout: float = Field(30, gt=0, le=300)
    idempotency_key: bool = Field(
        False,
        description="Send `Idempotency-Key`, the same on every try of this step, for "
        "services that perform a request once per key.",
    )
    follow_redirects: bool = Field(
        False, description=f"Follow up to {MAX_REDIRECTS} redirects, each hop vetted like the URL."
    )


async def run_transform(
    _action: str, params: dict[str, Any], _credential: Any, _context: StepContext
) -> Any:
    return params  # already rendered by the engine


async def run_filter(
    _action: str, params: dict[str, Any], _credential: Any, _context: StepContext
) -> Any:
    if not is_true(params.get("condition")):
        raise StopRun()
    return {"passed": True}


async def run_delay(
    _action: str, params: dict[str, Any], _credential: Any, _context: StepContext
) -> Any:
    raise Reschedule(DelayParams.model_validate(params).seconds)


async def run_http_request(
    _action: str, params: dict[str, Any], _credential: Any, context: StepContext
) -> Any:
    request = HttpRequestParams.model_validate(params)
    headers = dict(request.headers)
    if request.idempotency_key:
        headers["Idempotency-Key"] = context.idempotency_key
    response = await http.send_following(
        context,
        request.method,
        request.url,
        max_redirects=MAX_REDIRECTS if request.follow_redirects else 0,
        headers=headers,
        json=request.json_body,
        timeout_s=request.timeout,
    )
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": http.body(response),
        "url": str(response.url),
    }


CONNECTORS = (
    Connector(
        "transform",
        {"build": Action("build", TransformParams, "Build a new object from templates.")},
        run_transform,
        "Reshape data between steps.",
    ),
    Connector(
        "filter",
        {"check": Action("check", FilterParams, "Stop the run (succeeded) when false.")},
        run_filter,
        "Continue only when a condition holds.",
    ),
    Connector(
        "delay",
        {"wait": Action("wait", DelayParams, "Wait without holding a worker.")},
        run_delay,
        "Pause the run.",
    ),
    Connector(
        "http_request",
        {"request": Action("request", HttpRequestParams, "Call any HTTP API.")},
        run_http_request,
        "Send an HTTP request.",
    ),
)
