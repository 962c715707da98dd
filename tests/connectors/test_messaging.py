"""Slack, Telegram and Discord against a local peer that answers as each service does."""

from __future__ import annotations

from typing import Any

import pytest

from levqor.connectors.errors import ConnectorError, RateLimitedError, RetryableError
from tests.connectors.helpers import run_action

# --- Slack ---------------------------------------------------------------------------


async def test_slack_bot_posts_with_chat_post_message(http_peer: Any) -> None:
    http_peer.reply(200, {"ok": True, "channel": "C123", "ts": "1700000000.000100"})
    output = await run_action(
        "slack",
        {"channel": "#sales", "text": "Paid: 42"},
        {"bot_token": "xoxb-test", "base_url": http_peer.url},
    )
    assert output == {"ok": True, "channel": "C123", "ts": "1700000000.000100"}
    [request] = http_peer.requests
    assert request["path"] == "/chat.postMessage"
    assert request["headers"]["authorization"] == "Bearer xoxb-test"
    assert request["json"] == {"channel": "#sales", "text": "Paid: 42"}


async def test_slack_ok_false_is_classified_by_error_name(http_peer: Any) -> None:
    credential = {"bot_token": "xoxb-test", "base_url": http_peer.url}
    params = {"channel": "#nowhere", "text": "hi"}
    http_peer.reply(200, {"ok": False, "error": "channel_not_found"})
    with pytest.raises(ConnectorError, match="channel_not_found") as caught:
        await run_action("slack", params, credential)
    assert not caught.value.retryable
    http_peer.reply(200, {"ok": False, "error": "internal_error"})
    with pytest.raises(RetryableError, match="internal_error"):
        await run_action("slack", params, credential)


async def test_slack_429_is_retried_after_what_slack_says(http_peer: Any) -> None:
    http_peer.reply(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "30"})
    with pytest.raises(RateLimitedError) as caught:
        await run_action(
            "slack", {"channel": "#a", "text": "hi"}, {"bot_token": "x", "base_url": http_peer.url}
        )
    assert caught.value.retry_after_s == 30


async def test_slack_incoming_webhook(http_peer: Any) -> None:
    http_peer.reply(200, "ok")
    output = await run_action(
        "slack", {"text": "Deploy done"}, {"webhook_url": f"{http_peer.url}/services/T/B/X"}
    )
    assert output == {"ok": True}
    assert http_peer.requests[0]["json"] == {"text": "Deploy done"}
    http_peer.reply(404, "no_service")
    with pytest.raises(ConnectorError, match="no_service") as caught:
        await run_action("slack", {"text": "x"}, {"webhook_url": f"{http_peer.url}/services/T"})
    assert not caught.value.retryable


async def test_slack_without_a_usable_credential_fails_clearly() -> None:
    with pytest.raises(ConnectorError, match="bot_token or a webhook_url"):
        await run_action("slack", {"text": "x"}, None)


# --- Telegram -------------------------------------------------------------------------


async def test_telegram_send_message_with_markdown_and_silent(http_peer: Any) -> None:
    http_peer.reply(200, {"ok": True, "result": {"message_id": 77, "chat": {"id": 5}}})
    output = await run_action(
        "telegram",
        {"chat_id": 5, "text": "*Paid* 42", "disable_notification": True},
        {"bot_token": "123:ABC", "base_url": http_peer.url},
    )
    assert output == {"message_id": 77, "chat_id": 5}
    [request] = http_peer.requests
    assert request["path"] == "/bot123:ABC/sendMessage"
    assert request["json"] == {
        "chat_id": 5,
        "text": "*Paid* 42",
        "parse_mode": "Markdown",
        "disable_notification": True,
    }


async def test_telegram_429_uses_parameters_retry_after(http_peer: Any) -> None:
    http_peer.reply(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 12",
            "parameters": {"retry_after": 12},
        },
    )
    with pytest.raises(RateLimitedError) as caught:
        await run_action(
            "telegram", {"chat_id": 1, "text": "x"}, {"bot_token": "t", "base_url": http_peer.url}
        )
    assert caught.value.retry_after_s == 12


async def test_telegram_bad_request_fails_without_leaking_the_token(http_peer: Any) -> None:
    http_peer.reply(
        400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
    )
    with pytest.raises(ConnectorError, match="chat not found") as caught:
        await run_action(
            "telegram",
            {"chat_id": 1, "text": "x"},
            {"bot_token": "123:SECRET", "base_url": http_peer.url},
        )
    assert not caught.value.retryable
    assert "SECRET" not in str(caught.value)


# --- Discord --------------------------------------------------------------------------


async def test_discord_webhook_waits_for_the_message(http_peer: Any) -> None:
    http_peer.reply(200, {"id": "1100", "content": "hi"})
    output = await run_action(
        "discord",
        {"content": "hi", "username": "Levqor"},
        {"webhook_url": f"{http_peer.url}/api/webhooks/1/tok"},
    )
    assert output == {"id": "1100"}
    [request] = http_peer.requests
    assert request["path"] == "/api/webhooks/1/tok?wait=true"
    assert request["json"] == {"content": "hi", "username": "Levqor"}


async def test_discord_429_retry_after_from_the_body(http_peer: Any) -> None:
    http_peer.reply(429, {"message": "You are being rate limited.", "retry_after": 1.5})
    with pytest.raises(RateLimitedError) as caught:
        await run_action(
            "discord", {"content": "x"}, {"webhook_url": f"{http_peer.url}/api/webhooks/1/t"}
        )
    assert caught.value.retry_after_s == 1.5


async def test_discord_needs_content_or_embeds() -> None:
    with pytest.raises(ValueError, match="content or embeds"):
        await run_action("discord", {"username": "x"}, {"webhook_url": "http://127.0.0.1:9/"})
