"""Discord: post through a channel webhook.

Credential: `webhook_url`. Posted with `?wait=true` so Discord answers the created
message (its id). A 429 answers `{"retry_after": seconds}` and a Retry-After header.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field
from levqor.connectors.errors import RateLimitedError


class PostMessage(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    content: str | None = Field(None, max_length=2000)
    username: str | None = Field(None, max_length=80, description="Overrides the webhook's name.")
    embeds: list[dict[str, Any]] | None = Field(None, max_length=10)

    @model_validator(mode="after")
    def _something_to_say(self) -> PostMessage:
        if not self.content and not self.embeds:
            raise ValueError("a message needs content or embeds")
        return self


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    message = PostMessage.model_validate(params)
    webhook_url = secret_field(credential, "webhook_url", "discord")
    response = await http.send(
        context,
        "POST",
        webhook_url,
        check=False,
        params={"wait": "true"},
        json=message.model_dump(exclude_none=True),
    )
    answer = http.body(response)
    if response.status_code == 429:
        wait = answer.get("retry_after") if isinstance(answer, dict) else None
        raise RateLimitedError(
            "discord: rate limited",
            retry_after_s=float(wait) if wait is not None else http.retry_after(response),
        )
    detail = answer.get("message") if isinstance(answer, dict) else None
    http.raise_for_status(response, detail=f"discord: {detail or response.text[:200]}")
    return {"id": answer.get("id") if isinstance(answer, dict) else None}


CONNECTOR = Connector(
    "discord",
    {"post_message": Action("post_message", PostMessage, "Post a message to a channel.")},
    run,
    "Send messages to a Discord channel.",
    credential_fields=("webhook_url",),
)
