"""GitHub: create an issue through the REST API.

Credential: `token` (a fine-grained or classic token with issues:write); `base_url`
replaces `https://api.github.com` (GitHub Enterprise: `https://HOST/api/v3`). GitHub
signals rate limits with 403 or 429 and `x-ratelimit-remaining: 0`; the engine waits
until `x-ratelimit-reset` (or Retry-After for secondary limits).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field
from levqor.connectors.errors import RateLimitedError

API = "https://api.github.com"
NAME = r"^[A-Za-z0-9_.-]+$"


class CreateIssue(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=100, pattern=NAME)
    repo: str = Field(min_length=1, max_length=100, pattern=NAME)
    title: str = Field(min_length=1, max_length=256)
    body: str | None = Field(None, max_length=65_536)
    labels: list[str] | None = None


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    issue = CreateIssue.model_validate(params)
    token = secret_field(credential, "token", "github")
    base = (credential or {}).get("base_url") or API
    response = await http.send(
        context,
        "POST",
        f"{base}/repos/{issue.owner}/{issue.repo}/issues",
        check=False,
        headers={
            "accept": "application/vnd.github+json",
            "authorization": f"Bearer {token}",
            "x-github-api-version": "2022-11-28",
        },
        json=issue.model_dump(exclude_none=True, exclude={"owner", "repo"}),
    )
    if response.status_code in (403, 429) and _rate_limited(response):
        raise RateLimitedError("github: rate limit exceeded", retry_after_s=_reset_in(response))
    answer = http.body(response)
    detail = answer.get("message") if isinstance(answer, dict) else None
    http.raise_for_status(response, detail=f"github: {detail or response.text[:200]}")
    return {"number": answer["number"], "url": answer.get("html_url")}


def _rate_limited(response: httpx.Response) -> bool:
    return response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers


def _reset_in(response: httpx.Response) -> float | None:
    waited = http.retry_after(response)
    if waited is not None:
        return waited
    reset = response.headers.get("x-ratelimit-reset")
    return max(0.0, float(reset) - time.time()) if reset and reset.isdigit() else None


CONNECTOR = Connector(
    "github",
    {"create_issue": Action("create_issue", CreateIssue, "Open an issue in a repository.")},
    run,
    "Work with GitHub repositories.",
    credential_fields=("token",),
)
