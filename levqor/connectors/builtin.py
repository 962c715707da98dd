"""The built-in steps that need no outside service: transform, filter, delay, http_request."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, RootModel

from levqor.connectors.base import Action, Connector, StepContext
from levqor.connectors.errors import (
    ConnectorError,
    RateLimitedError,
    Reschedule,
    RetryableError,
    StopRun,
)
from levqor.db.base import utcnow
from levqor.workflows.templates import is_true

MAX_RESPONSE_BYTES = 5 * 1024 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 500, 502, 503, 504})


class TransformParams(RootModel[dict[str, Any]]):
    """Any object; every string in it is a template."""


class FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    condition: Any = Field(description="A template that renders true or false.")


class DelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=30 * 24 * 3600)


class HttpRequestParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(min_length=1, max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    timeout: float = Field(30, gt=0, le=300)


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
    try:
        response = await context.http.request(
            request.method,
            request.url,
            headers=request.headers,
            json=request.json_body,
            timeout=min(request.timeout, context.timeout_s),
        )
    except httpx.TimeoutException as exc:
        raise RetryableError(f"timed out: {request.method} {request.url}") from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"network error: {type(exc).__name__}: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise ConnectorError(f"invalid URL: {exc}") from exc
    raise_for_status(response)
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": _body(response),
    }


def raise_for_status(response: httpx.Response) -> None:
    """Classify an HTTP answer: 2xx/3xx pass, 429 and 5xx retry, other 4xx fail."""
    status = response.status_code
    if status < 400:
        return
    summary = f"HTTP {status} from {response.request.method} {response.request.url}"
    if status == 429:
        raise RateLimitedError(summary, retry_after_s=retry_after(response))
    if status in RETRYABLE_STATUS or status >= 500:
        raise RetryableError(summary, retry_after_s=retry_after(response))
    raise ConnectorError(f"{summary}: {response.text[:500]}")


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date (RFC 9110)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def _body(response: httpx.Response) -> Any:
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise ConnectorError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            return response.text
    return response.text


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
