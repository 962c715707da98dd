"""GitHub issues and signed outbound webhooks against a local peer."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from levqor.connectors.errors import ConnectorError, RateLimitedError
from tests.connectors.helpers import run_action

ISSUE = {"owner": "acme", "repo": "app", "title": "Payment failed", "labels": ["billing"]}


async def test_github_creates_an_issue(http_peer: Any) -> None:
    http_peer.reply(201, {"number": 12, "html_url": "https://github.com/acme/app/issues/12"})
    output = await run_action("github", ISSUE, {"token": "ghp_x", "base_url": http_peer.url})
    assert output == {"number": 12, "url": "https://github.com/acme/app/issues/12"}
    [request] = http_peer.requests
    assert request["path"] == "/repos/acme/app/issues"
    assert request["headers"]["authorization"] == "Bearer ghp_x"
    assert request["headers"]["accept"] == "application/vnd.github+json"
    assert request["json"] == {"title": "Payment failed", "labels": ["billing"]}


async def test_github_rate_limit_waits_for_the_reset(http_peer: Any) -> None:
    reset = int(time.time()) + 60
    http_peer.reply(
        403,
        {"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    with pytest.raises(RateLimitedError) as caught:
        await run_action("github", ISSUE, {"token": "t", "base_url": http_peer.url})
    assert caught.value.retry_after_s is not None
    assert 55 <= caught.value.retry_after_s <= 61


async def test_github_forbidden_without_rate_limit_is_final(http_peer: Any) -> None:
    http_peer.reply(404, {"message": "Not Found"})
    with pytest.raises(ConnectorError, match="Not Found") as caught:
        await run_action("github", ISSUE, {"token": "t", "base_url": http_peer.url})
    assert not caught.value.retryable


def test_github_refuses_a_path_in_a_repo_name() -> None:
    from levqor.connectors.github import CreateIssue

    with pytest.raises(ValueError, match="repo"):
        CreateIssue.model_validate({**ISSUE, "repo": "../../user"})


async def test_webhook_is_signed_per_standard_webhooks(http_peer: Any) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    await run_action(
        "webhook",
        {"url": f"{http_peer.url}/in", "payload": {"event": "paid", "cents": 4200}},
        {"signing_secret": secret},
        job_id="job_1",
        step_id="notify",
    )
    [request] = http_peer.requests
    headers = request["headers"]
    body = orjson.dumps(request["json"]).decode()
    verified = Webhook(secret).verify(
        body,
        {
            "webhook-id": headers["webhook-id"],
            "webhook-timestamp": headers["webhook-timestamp"],
            "webhook-signature": headers["webhook-signature"],
        },
    )
    assert verified == {"event": "paid", "cents": 4200}


async def test_a_retried_webhook_step_keeps_its_id(http_peer: Any) -> None:
    params = {"url": f"{http_peer.url}/in", "payload": {}}
    for _ in range(2):
        await run_action("webhook", params, None, job_id="job_1", step_id="notify")
    first, second = (request["headers"] for request in http_peer.requests)
    assert "webhook-signature" not in first  # no secret: sent unsigned
    assert first["webhook-id"] == second["webhook-id"]  # the receiver can drop the repeat
    other = await run_action("webhook", params, None, job_id="job_2", step_id="notify")
    assert other["webhook_id"] != first["webhook-id"]
