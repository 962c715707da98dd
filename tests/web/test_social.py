"""Social posts through Buffer's GraphQL API (a loopback peer stands in for it): the
request as Buffer documents it, the token stored encrypted, Buffer's in-200 errors read,
and a post Buffer could not take retried."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.web import social
from levqor.web.models import SocialPost
from tests.conftest import serve_app

TOKEN = "buffer-api-key-1234"


@pytest.fixture
def buffer_settings(make_settings: Any, fresh_database: None, http_peer: Any) -> Settings:
    settings: Settings = make_settings(buffer_url=f"{http_peer.url}/graphql")
    return settings


def created(post_id: str = "post_1") -> dict[str, Any]:
    return {"data": {"createPost": {"post": {"id": post_id, "dueAt": None}}}}


async def test_a_post_is_created_as_buffer_documents_it(
    buffer_settings: Settings, http_peer: Any
) -> None:
    http_peer.reply(200, created("post_42"))
    http_peer.reply(200, created("post_43"))
    async with serve_app(buffer_settings) as (_client, runtime):
        await social.connect(runtime.db, runtime.cipher, channel_id="chan_1", token=TOKEN)
        await social.queue(runtime.db, text="Levqor 1.0 is out", due_at=None)
        [now] = await social.send_queued(runtime.db, runtime.settings, runtime.cipher)
        later = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
        await social.queue(runtime.db, text="Office hours", due_at=later)
        [scheduled] = await social.send_queued(runtime.db, runtime.settings, runtime.cipher)
        async with runtime.db.read() as session:
            raw = (await session.execute(text("SELECT token_encrypted FROM social_accounts"))).all()
    assert (now.status, now.buffer_post_id) == ("sent", "post_42")
    assert scheduled.status == "sent"
    first, second = http_peer.requests
    assert first["method"] == "POST"
    assert first["path"] == "/graphql"
    assert first["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert "createPost(input: $input)" in first["json"]["query"]
    assert first["json"]["variables"]["input"] == {
        "channelId": "chan_1",
        "text": "Levqor 1.0 is out",
        "schedulingType": "automatic",
        "mode": "addToQueue",
    }
    assert second["json"]["variables"]["input"]["mode"] == "customScheduled"
    assert second["json"]["variables"]["input"]["dueAt"] == "2026-12-01T09:30:00.000Z"
    assert TOKEN not in str(raw)  # encrypted at rest


async def test_buffers_errors_inside_a_200_fail_the_post_with_its_message(
    buffer_settings: Settings, http_peer: Any
) -> None:
    http_peer.reply(200, {"data": {"createPost": {"message": "Channel is disconnected"}}})
    async with serve_app(buffer_settings) as (_client, runtime):
        await social.connect(runtime.db, runtime.cipher, channel_id="chan_1", token=TOKEN)
        await social.queue(runtime.db, text="hello", due_at=None)
        [post] = await social.send_queued(runtime.db, runtime.settings, runtime.cipher)
    assert post.status == "failed"
    assert post.error is not None
    assert "Channel is disconnected" in post.error


async def test_a_post_buffer_could_not_take_is_retried_by_the_scheduler(
    buffer_settings: Settings, http_peer: Any
) -> None:
    http_peer.reply(503)
    http_peer.reply(200, created("post_7"))
    async with serve_app(buffer_settings) as (_client, runtime):
        await social.connect(runtime.db, runtime.cipher, channel_id="chan_1", token=TOKEN)
        await social.queue(runtime.db, text="hello", due_at=None)
        [first] = await social.send_queued(runtime.db, runtime.settings, runtime.cipher)
        assert (first.status, first.attempts) == ("queued", 1)
        retry = social.tick_task(runtime.db, runtime.settings, runtime.cipher)
        await retry()
        async with runtime.db.read() as session:
            stored = await session.scalar(select(SocialPost))
    assert stored is not None
    assert (stored.status, stored.buffer_post_id, stored.attempts) == ("sent", "post_7", 2)


async def test_posting_without_a_channel_is_a_clear_error(buffer_settings: Settings) -> None:
    async with serve_app(buffer_settings) as (_client, runtime):
        with pytest.raises(social.NotConnected):
            await social.send_queued(runtime.db, runtime.settings, runtime.cipher)


def test_the_commands_connect_then_post(
    cli_env: Settings, http_peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVQOR_BUFFER_URL", f"{http_peer.url}/graphql")
    http_peer.reply(200, created("post_9"))
    runner = CliRunner()
    connected = runner.invoke(
        cli_app, ["social", "connect", "--channel", "chan_9"], input=f"{TOKEN}\n"
    )
    assert connected.exit_code == 0, connected.output
    posted = runner.invoke(
        cli_app, ["social", "post", "From the CLI", "--at", "2026-12-24T08:00:00", "--json"]
    )
    assert posted.exit_code == 0, posted.output
    assert '"status": "sent"' in posted.output
    [request] = http_peer.requests
    assert request["json"]["variables"]["input"]["dueAt"] == "2026-12-24T08:00:00.000Z"
