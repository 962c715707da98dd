"""Telegram: `sendMessage` through the Bot API.

Credential: `bot_token`; `base_url` replaces `https://api.telegram.org` (a local Bot API
server). The Bot API answers `{"ok": false, "error_code": …, "description": …}`; a 429
carries `parameters.retry_after`, which the engine honours.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from levqor.connectors import http
from levqor.connectors.base import Action, Connector, ConnectorModel, StepContext, secret_field
from levqor.connectors.errors import ConnectorError, RateLimitedError

API = "https://api.telegram.org"


class SendMessage(ConnectorModel):
    model_config = ConfigDict(extra="forbid")

    chat_id: int | str = Field(description="A chat id or `@channelusername`.")
    text: str = Field(min_length=1, max_length=4096)
    parse_mode: Literal["Markdown", "MarkdownV2", "HTML"] | None = "Markdown"
    disable_notification: bool = Field(False, description="Deliver silently.")


async def run(
    _action: str, params: dict[str, Any], credential: dict[str, Any] | None, context: StepContext
) -> Any:
    message = SendMessage.model_validate(params)
    bot_token = secret_field(credential, "bot_token", "telegram")
    base = (credential or {}).get("base_url") or API
    response = await http.send(
        context,
        "POST",
        f"{base}/bot{bot_token}/sendMessage",
        check=False,
        json=message.model_dump(exclude_none=True),
    )
    answer = http.body(response)
    if isinstance(answer, dict) and answer.get("ok"):
        result = answer.get("result") or {}
        return {"message_id": result.get("message_id"), "chat_id": message.chat_id}
    description = answer.get("description") if isinstance(answer, dict) else None
    if response.status_code == 429:
        wait = (
            (answer.get("parameters") or {}).get("retry_after")
            if isinstance(answer, dict)
            else None
        )
        raise RateLimitedError(
            f"telegram: {description or 'too many requests'}",
            retry_after_s=float(wait) if wait is not None else http.retry_after(response),
        )
    http.raise_for_status(response, detail=f"telegram: {description or response.text[:200]}")
    raise ConnectorError(f"telegram: {description or 'the message was not sent'}")


CONNECTOR = Connector(
    "telegram",
    {"send_message": Action("send_message", SendMessage, "Send a text message to a chat.")},
    run,
    "Send Telegram messages from a bot.",
    credential_fields=("bot_token",),
)
