"""Where alerts go: Telegram, a Slack (or Mattermost) incoming webhook, e-mail and a
Standard Webhooks-signed POST, each on when its settings are (API.md, "Operations
settings").

Each channel calls its service through the connector that already speaks it (one home
for each service's HTTP call), with the operator's settings as the credential. The
operator configured these addresses, so they are reached with a plain client, not the
SSRF-guarded one that users' steps get.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from levqor import mail
from levqor.config import Settings
from levqor.connectors import slack, telegram, webhook
from levqor.connectors.base import StepContext

ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵", "resolved": "🟢"}


@dataclass(frozen=True)
class Message:
    """An alert as the channels send it."""

    alert_id: str
    severity: str
    title: str
    body: str

    @property
    def text(self) -> str:
        return (
            f"{ICONS.get(self.severity, '')} [{self.severity.upper()}] {self.title}\n\n{self.body}"
        )


Send = Callable[[Settings, httpx.AsyncClient, Message], Awaitable[None]]


def _context(
    client: httpx.AsyncClient, settings: Settings, message: Message, channel: str
) -> StepContext:
    # The alert id stands for the job: a retried delivery carries the same webhook-id.
    return StepContext(
        http=client,
        job_id=message.alert_id,
        step_id=channel,
        data={},
        timeout_s=settings.alert_timeout_s,
    )


async def _telegram(settings: Settings, client: httpx.AsyncClient, message: Message) -> None:
    assert settings.alert_telegram_bot_token is not None
    await telegram.run(
        "send_message",
        # Plain text: an underscore in a title must not break Markdown parsing.
        {
            "chat_id": settings.alert_telegram_chat_id,
            "text": message.text[:4096],
            "parse_mode": None,
        },
        {
            "bot_token": settings.alert_telegram_bot_token.get_secret_value(),
            "base_url": settings.alert_telegram_api_base.rstrip("/"),
        },
        _context(client, settings, message, "telegram"),
    )


async def _slack(settings: Settings, client: httpx.AsyncClient, message: Message) -> None:
    assert settings.alert_slack_webhook_url is not None
    await slack.run(
        "post_message",
        {"text": message.text},
        {"webhook_url": settings.alert_slack_webhook_url.get_secret_value()},
        _context(client, settings, message, "slack"),
    )


async def _email(settings: Settings, _client: httpx.AsyncClient, message: Message) -> None:
    assert settings.alert_email_to is not None
    await mail.send(
        settings,
        to=settings.alert_email_to,
        subject=f"[Levqor {message.severity}] {message.title}",
        text=message.text,
    )


async def _webhook(settings: Settings, client: httpx.AsyncClient, message: Message) -> None:
    assert settings.alert_webhook_url is not None
    secret = settings.alert_webhook_secret
    payload: dict[str, Any] = {
        "type": f"alert.{message.severity}",
        "data": {
            "id": message.alert_id,
            "severity": message.severity,
            "title": message.title,
            "body": message.body,
        },
    }
    await webhook.run(
        "send",
        {"url": settings.alert_webhook_url, "payload": payload},
        {"signing_secret": secret.get_secret_value()} if secret else None,
        _context(client, settings, message, "webhook"),
    )


def configured(settings: Settings) -> dict[str, Send]:
    """The channels these settings turn on, by name."""
    found: dict[str, Send] = {}
    if settings.alert_telegram_bot_token and settings.alert_telegram_chat_id:
        found["telegram"] = _telegram
    if settings.alert_slack_webhook_url:
        found["slack"] = _slack
    if settings.alert_email_to and mail.configured(settings):
        found["email"] = _email
    if settings.alert_webhook_url:
        found["webhook"] = _webhook
    return found
