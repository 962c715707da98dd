"""Slack: post a message through an incoming webhook or `chat.postMessage`.

Credential: `webhook_url` (an incoming webhook; the channel is the webhook's own) or
`bot_token` (`xoxb-…`, for `chat.postMessage` to any channel the bot is in). `base_url`
replaces `https://slack.com/api` (a Mattermost server, a test peer).

Slack answers API calls with HTTP 200 and `{"ok": false, "error": "…"}`: those errors
are classified by name (`ratelimited` and server trouble retry; `channel_not_found`,
`invalid_auth` and the like do not). Webhooks answer errors as plain text with a 4xx.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext
from levqor.connectors.errors import ConnectorError, RateLimitedError, RetryableError

API = "https://slack.com/api"
RETRYABLE_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class PostMessage(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=40_000, description="mrkdwn text.")
    channel: str | None = Field(
        None, description="`#name` or an id; required with a bot token.", max_length=200
    )
    blocks: list[dict[str, Any]] | None = Field(None, description="Block Kit blocks.")
    thread_ts: str | None = Field(None, description="Reply in this thread.")


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    message = PostMessage.model_validate(params)
    secret = credential or {}
    if secret.get("bot_token"):
        return await _post_as_bot(message, secret, context)
    if secret.get("webhook_url"):
        return await _post_to_webhook(message, secret["webhook_url"], context)
    raise ConnectorError("slack needs a credential with a bot_token or a webhook_url")


async def _post_as_bot(
    message: PostMessage, secret: dict[str, Any], context: StepContext
) -> dict[str, Any]:
    if not message.channel:
        raise ConnectorError("posting with a bot token needs a channel")
    response = await http.send(
        context,
        "POST",
        f"{secret.get('base_url') or API}/chat.postMessage",
        headers={"authorization": f"Bearer {secret['bot_token']}"},
        json=message.model_dump(exclude_none=True),
    )
    answer = response.json()
    if not answer.get("ok"):
        error = str(answer.get("error", "unknown_error"))
        if error == "ratelimited":
            raise RateLimitedError("slack: ratelimited", retry_after_s=http.retry_after(response))
        if error in RETRYABLE_ERRORS:
            raise RetryableError(f"slack: {error}")
        raise ConnectorError(f"slack: {error}")
    return {"ok": True, "channel": answer.get("channel"), "ts": answer.get("ts")}


async def _post_to_webhook(message: PostMessage, url: str, context: StepContext) -> dict[str, Any]:
    response = await http.send(
        context, "POST", url, check=False, json=message.model_dump(exclude_none=True)
    )
    http.raise_for_status(response, detail=f"slack: {response.text[:200]}")
    return {"ok": True}


CONNECTOR = Connector(
    "slack",
    {"post_message": Action("post_message", PostMessage, "Post a message to a channel.")},
    run,
    "Send messages to Slack (or Mattermost).",
    credential_fields=("webhook_url", "bot_token"),
)
