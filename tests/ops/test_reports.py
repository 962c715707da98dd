"""`levqor report`: the numbers of a period, printed, as JSON, and sent once a day."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.billing.models import Payment
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs.scheduler import Scheduler
from levqor.ops import reports
from levqor.ops.models import Alert
from levqor.runtime import Runtime
from tests.conftest import serve_app
from tests.factories import make_workflow, start


async def test_a_report_counts_the_period(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    for _ in range(3):
        await start(client, account, workflow)
    async with runtime.db.write() as session, session.begin():
        session.add(
            Payment(
                user_id=account.id,
                kind="pack",
                product="small",
                amount_cents=1000,
                currency="usd",
                credits=100,
            )
        )
    async with runtime.db.read() as session:
        report = await reports.build(session, runtime.settings, "weekly")
    assert (report.runs, report.failed, report.signups, report.paying_users) == (3, 0, 1, 1)
    assert report.revenue_cents == 1000
    assert report.stripe_cents == 59  # 2.9% + 30c
    text = reports.as_text(report)
    assert "Runs: 3, failed: 0 (0.0%)" in text
    assert "Revenue: 10.00 USD" in text


async def test_the_daily_report_is_sent_once_a_day(
    make_settings: Any, fresh_database: None, http_peer: Any
) -> None:
    settings: Settings = make_settings(alert_slack_webhook_url=f"{http_peer.url}/slack")
    async with serve_app(settings) as (_client, runtime):
        await Scheduler(runtime).tick(utcnow())
        task = reports.daily_task(runtime.db, settings, every_s=0)
        assert await task() is False  # today's was sent by the tick
        async with runtime.db.read() as session:
            sent = (await session.scalars(select(Alert).where(Alert.severity == "info"))).all()
    assert [alert.title for alert in sent] == ["Levqor daily report"]
    [posted] = [r for r in http_peer.requests if r["path"] == "/slack"]
    assert "Levqor daily report" in posted["json"]["text"]


def test_the_cli_prints_it(cli_env: Settings) -> None:
    printed = CliRunner().invoke(cli_app, ["report", "monthly", "--json"])
    assert printed.exit_code == 0, printed.output
    body = json.loads(printed.stdout)
    assert (body["period"], body["runs"], body["uptime"]) == ("monthly", 0, None)
    wrong = CliRunner().invoke(cli_app, ["report", "yearly"])
    assert wrong.exit_code == 2
