"""Alerts reach every configured channel (local peers standing in for Telegram, Slack, an
SMTP server and a webhook receiver); a channel that is down never raises and is retried;
repeats are counted, not re-sent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs.scheduler import Scheduler
from levqor.ops import alerts
from levqor.ops.models import Alert, AlertDelivery
from levqor.runtime import Runtime
from tests.conftest import assert_problem, serve_app
from tests.factories import mail_settings, make_admin

BOT = "123456:test-token"
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def channel_settings(peer: Any, smtp: Any | None = None) -> dict[str, Any]:
    return {
        "alert_telegram_bot_token": BOT,
        "alert_telegram_chat_id": "-100777",
        "alert_telegram_api_base": peer.url,
        "alert_slack_webhook_url": f"{peer.url}/slack",
        "alert_webhook_url": f"{peer.url}/hook",
        "alert_webhook_secret": SECRET,
        **({"alert_email_to": "ops@example.com", **mail_settings(smtp)} if smtp else {}),
    }


@pytest.fixture
async def alerting(
    make_settings: Any, fresh_database: None, http_peer: Any, smtp_peer: Any
) -> AsyncIterator[tuple[Settings, Runtime]]:
    settings = make_settings(**channel_settings(http_peer, smtp_peer))
    async with serve_app(settings) as (_client, runtime):
        yield settings, runtime


async def deliveries(runtime: Runtime, alert_id: str | None = None) -> dict[str, AlertDelivery]:
    """Each channel's delivery (of one alert: the scheduler's tick sends others too)."""
    query = select(AlertDelivery)
    if alert_id is not None:
        query = query.where(AlertDelivery.alert_id == alert_id)
    async with runtime.db.read() as session:
        return {d.channel: d for d in await session.scalars(query)}


async def test_an_alert_reaches_every_channel(
    alerting: tuple[Settings, Runtime], http_peer: Any, smtp_peer: Any
) -> None:
    settings, runtime = alerting
    recorded = await alerts.alert(runtime.db, settings, "critical", "Disk_full on db1", "93% used")
    assert recorded is not None
    by_path = {request["path"]: request for request in http_peer.requests}
    telegram = by_path[f"/bot{BOT}/sendMessage"]["json"]
    assert telegram["chat_id"] == "-100777"
    assert telegram["text"].startswith("🔴 [CRITICAL] Disk_full on db1")
    assert "parse_mode" not in telegram  # plain text: the underscore stays an underscore
    assert "93% used" in by_path["/slack"]["json"]["text"]
    hook = by_path["/hook"]
    assert hook["json"]["type"] == "alert.critical"
    assert hook["json"]["data"]["id"] == recorded.alert.id
    Webhook(SECRET).verify(orjson.dumps(hook["json"]), hook["headers"])  # raises if forged
    [mail] = smtp_peer.messages
    assert mail["to"] == ["ops@example.com"]
    assert mail["message"]["Subject"] == "[Levqor critical] Disk_full on db1"
    sent = await deliveries(runtime)
    assert {channel: d.status for channel, d in sent.items()} == {
        "telegram": "sent",
        "slack": "sent",
        "webhook": "sent",
        "email": "sent",
    }


async def test_a_channel_that_is_down_never_raises_and_is_retried(
    make_settings: Any, fresh_database: None, http_peer: Any
) -> None:
    http_peer.route("POST", f"/bot{BOT}/", 502, {"ok": False, "description": "Bad Gateway"})
    settings = make_settings(
        **{**channel_settings(http_peer), "alert_slack_webhook_url": "http://127.0.0.1:9/down"}
    )
    async with serve_app(settings) as (_client, runtime):
        raised = await alerts.alert(
            runtime.db, settings, "warning", "Queue slow", "Oldest job 11 min"
        )
        assert raised is not None
        first = await deliveries(runtime, raised.alert.id)
        assert first["webhook"].status == "sent"  # the others go on
        for channel in ("telegram", "slack"):
            assert (first[channel].status, first[channel].attempts) == ("pending", 1)
            assert first[channel].error
            assert first[channel].next_attempt_at > utcnow()  # backing off
        http_peer.routes.clear()  # Telegram is back; Slack's address still refuses
        async with runtime.db.write() as session, session.begin():
            await session.execute(update(AlertDelivery).values(next_attempt_at=utcnow()))
        await Scheduler(runtime).tick(utcnow())  # the scheduler retries what is due
        again = await deliveries(runtime, raised.alert.id)
    assert (again["telegram"].status, again["telegram"].attempts) == ("sent", 2)
    assert (again["slack"].status, again["slack"].attempts) == ("pending", 2)
    telegram = [r["json"]["text"] for r in http_peer.requests if str(r["path"]).startswith("/bot")]
    assert len([text for text in telegram if "Queue slow" in text]) == 2


async def test_a_channel_gives_up_after_its_attempts(
    make_settings: Any, fresh_database: None, http_peer: Any
) -> None:
    settings = make_settings(
        alert_slack_webhook_url="http://127.0.0.1:9/down", alert_max_attempts=2
    )
    async with serve_app(settings) as (_client, runtime):
        await alerts.alert(runtime.db, settings, "info", "Hello", "x")
        async with runtime.db.write() as session, session.begin():
            await session.execute(update(AlertDelivery).values(next_attempt_at=utcnow()))
        await alerts.deliver_due(runtime.db, settings)
        [slack] = (await deliveries(runtime)).values()
    assert (slack.status, slack.attempts) == ("failed", 2)


async def test_the_same_alert_again_is_counted_not_resent(
    alerting: tuple[Settings, Runtime], http_peer: Any
) -> None:
    settings, runtime = alerting
    first = await alerts.alert(runtime.db, settings, "warning", "Slow", "p95 240 ms")
    again = await alerts.alert(runtime.db, settings, "warning", "Slow", "p95 240 ms")
    other = await alerts.alert(runtime.db, settings, "warning", "Slow", "p95 310 ms")
    assert first
    assert again
    assert other
    assert again.new is False
    assert again.alert.id == first.alert.id
    assert other.new is True
    async with runtime.db.read() as session:
        stored = {a.body: a.repeats for a in await session.scalars(select(Alert))}
    assert stored == {"p95 240 ms": 1, "p95 310 ms": 0}
    assert len([p for p in http_peer.paths() if p == "/slack"]) == 2


async def test_a_condition_is_alerted_once_until_it_resolves(
    alerting: tuple[Settings, Runtime], http_peer: Any
) -> None:
    settings, runtime = alerting
    async with runtime.db.write() as session, session.begin():
        opened = await alerts.record(session, settings, "critical", "Stuck", "a", key="queue")
        repeat = await alerts.record(session, settings, "critical", "Stuck", "b", key="queue")
        resolved = await alerts.resolve(session, settings, "queue", "Moving", "drained")
        nothing = await alerts.resolve(session, settings, "queue", "Moving", "drained")
        reopened = await alerts.record(session, settings, "critical", "Stuck", "c", key="queue")
    assert opened.new
    assert not repeat.new
    assert reopened.new
    assert resolved is not None
    assert resolved.alert.severity == "resolved"
    assert nothing is None
    await alerts.deliver_due(runtime.db, settings)
    texts = [r["json"]["text"] for r in http_peer.requests if r["path"] == "/slack"]
    assert [text.split("\n")[0] for text in texts] == [
        "🔴 [CRITICAL] Stuck",
        "🟢 [RESOLVED] Moving",
        "🔴 [CRITICAL] Stuck",
    ]


async def test_admins_read_the_history_with_each_channels_outcome(
    make_settings: Any, fresh_database: None, http_peer: Any, signup: Any
) -> None:
    settings = make_settings(alert_slack_webhook_url=f"{http_peer.url}/slack")
    async with serve_app(settings) as (client, runtime):
        await alerts.alert(runtime.db, settings, "info", "First", "1")
        await alerts.alert(runtime.db, settings, "warning", "Second", "2")
        user = await signup_on(client)
        assert_problem(
            await client.get("/api/v1/admin/alerts", headers=user.headers), 403, "forbidden"
        )
        await make_admin(runtime, user)
        page = await client.get("/api/v1/admin/alerts?limit=1", headers=user.headers)
        assert page.status_code == 200, page.text
        body = page.json()
        [newest] = body["data"]
        assert (newest["title"], newest["severity"]) == ("Second", "warning")
        assert newest["channels"] == [
            {
                "channel": "slack",
                "status": "sent",
                "attempts": 1,
                "error": None,
                "sent_at": newest["channels"][0]["sent_at"],
            }
        ]
        rest = await client.get(
            f"/api/v1/admin/alerts?cursor={body['next_cursor']}", headers=user.headers
        )
        assert [each["title"] for each in rest.json()["data"]] == ["First"]


async def signup_on(client: Any) -> Any:
    from tests.conftest import PASSWORD, Account

    answer = await client.post(
        "/api/v1/auth/signup", json={"email": "ops@example.com", "password": PASSWORD}
    )
    return Account("ops@example.com", answer.json())


def test_alerts_test_sends_through_every_channel_and_says_how_it_went(
    cli_env: Settings, http_peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVQOR_ALERT_SLACK_WEBHOOK_URL", f"{http_peer.url}/slack")
    monkeypatch.setenv("LEVQOR_ALERT_WEBHOOK_URL", f"{http_peer.url}/hook")
    runner = CliRunner()
    sent = runner.invoke(cli_app, ["alerts", "test", "--json"])
    assert sent.exit_code == 0, sent.output
    assert {(o["channel"], o["status"]) for o in orjson.loads(sent.stdout)} == {
        ("slack", "sent"),
        ("webhook", "sent"),
    }
    http_peer.route("POST", "/slack", 500, {"error": "down"})
    failed = runner.invoke(cli_app, ["alerts", "test"])
    assert failed.exit_code == 1
    assert "slack" in failed.output
    listed = runner.invoke(cli_app, ["alerts", "list", "--json"])
    assert [alert["title"] for alert in orjson.loads(listed.stdout)] == ["Test alert"] * 2
