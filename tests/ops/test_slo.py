"""The SLO watchdog: a slowed route breaches the SLO and one alert reaches a Telegram-like
peer; recovery resolves it; several serving processes are added up; the status page's
numbers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import select
from typer.testing import CliRunner

from levqor.app import create_app
from levqor.bootstrap import build_runtime
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.ops import slo
from levqor.ops.models import RequestStats
from tests.conftest import client_for
from tests.factories import make_admin

BOT = "123456:slo-token"


def with_test_routes(app: FastAPI) -> FastAPI:
    """A route slowed on purpose (the 'slowed route' of the test plan) and two others."""

    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.25)
        return {"ok": True}

    async def fast() -> dict[str, bool]:
        return {"ok": True}

    async def broken() -> None:
        raise HTTPException(503, "down for the test")

    app.add_api_route("/api/v1/test/slow", slow)
    app.add_api_route("/api/v1/test/fast", fast)
    app.add_api_route("/api/v1/test/broken", broken)
    return app


async def age_stats(runtime: Any, by: timedelta) -> None:
    """Time passing: the recorded slots move back by `by`."""
    async with runtime.db.write() as session, session.begin():
        for row in await session.scalars(select(RequestStats)):
            row.slot_start = row.slot_start - by


async def hit(client: httpx.AsyncClient, path: str, times: int) -> None:
    await asyncio.gather(*(client.get(path) for _ in range(times)))


@pytest.fixture
def slo_settings(make_settings: Any, fresh_database: None, http_peer: Any) -> Settings:
    built: Settings = make_settings(
        alert_telegram_bot_token=BOT,
        alert_telegram_chat_id="42",
        alert_telegram_api_base=http_peer.url,
        slo_breach_checks=2,
        slo_min_requests=5,
    )
    return built


def telegram_texts(peer: Any) -> list[str]:
    return [str(r["json"]["text"]) for r in peer.requests if str(r["path"]).startswith("/bot")]


async def test_a_slowed_route_breaches_the_slo_then_recovers(
    slo_settings: Settings, http_peer: Any
) -> None:
    runtime = build_runtime(slo_settings)
    app = with_test_routes(create_app(slo_settings, runtime))
    try:
        async with client_for(app) as client:
            await hit(client, "/api/v1/test/slow", 10)
            await app.state.latencies.flush(runtime.db, everything=True)
            first = await slo.check(runtime.db, slo_settings)
            assert (first.status, first.breaches_in_a_row) == ("breaching", 1)
            assert first.p95_ms is not None
            assert first.p95_ms >= 250  # the bucket that holds a 250 ms answer, or above
            assert telegram_texts(http_peer) == []  # one breaching check is not yet an alert
            second = await slo.check(runtime.db, slo_settings)
            assert second.breaches_in_a_row == 2
            [breached] = telegram_texts(http_peer)
            assert breached.startswith("🔴 [CRITICAL] API SLO breached")
            assert f"p95 {first.p95_ms:.0f} ms (SLO 200 ms)" in breached
            await slo.check(runtime.db, slo_settings)  # still breached: no second alert
            assert len(telegram_texts(http_peer)) == 1

            admin = await signup_admin(client, runtime)
            answer = await client.get("/api/v1/admin/slo", headers=admin)
            assert answer.json()["status"] == "breached"

            await app.state.latencies.flush(runtime.db, everything=True)  # the signup too
            await age_stats(runtime, timedelta(seconds=600))  # the window moves on
            for _ in range(40):  # one at a time; p95 of 40 forgives a GC pause or two
                await client.get("/api/v1/test/fast")
            await app.state.latencies.flush(runtime.db, everything=True)
            recovered = await slo.check(runtime.db, slo_settings)
            assert recovered.status == "ok", recovered
            assert telegram_texts(http_peer)[-1].startswith("🟢 [RESOLVED] API SLO met again")
            answer = await client.get("/api/v1/admin/slo", headers=admin)
            assert answer.json()["status"] == "ok"
    finally:
        await runtime.close()


async def signup_admin(client: httpx.AsyncClient, runtime: Any) -> dict[str, str]:
    from tests.conftest import PASSWORD, Account

    body = (
        await client.post(
            "/api/v1/auth/signup", json={"email": "slo@example.com", "password": PASSWORD}
        )
    ).json()
    account = Account("slo@example.com", body)
    await make_admin(runtime, account)
    return account.headers


async def test_a_share_of_5xx_over_the_slo_breaches_it(slo_settings: Settings) -> None:
    runtime = build_runtime(slo_settings)
    app = with_test_routes(create_app(slo_settings, runtime))
    try:
        async with client_for(app) as client:
            await hit(client, "/api/v1/test/fast", 18)
            await hit(client, "/api/v1/test/broken", 2)
            await app.state.latencies.flush(runtime.db, everything=True)
            judged = await slo.check(runtime.db, slo_settings)
    finally:
        await runtime.close()
    assert (judged.requests, judged.error_rate, judged.breached) == (20, 0.1, True)


async def test_every_serving_process_counts(slo_settings: Settings) -> None:
    """Two processes' recorders write their own slots; the window adds them up."""
    runtime = build_runtime(slo_settings)
    one, two = slo.Recorder(), slo.Recorder()
    try:
        for _ in range(19):
            one.record(20, 200)
            two.record(40, 200)
        two.record(900, 500)
        assert (
            await one.flush(runtime.db, everything=True),
            await two.flush(runtime.db, everything=True),
        ) == (1, 1)
        async with runtime.db.read() as session:
            judged = await slo.state(session, slo_settings)
    finally:
        await runtime.close()
    assert judged.requests == 39
    assert judged.error_rate == round(1 / 39, 6)
    assert judged.p95_ms == 50  # 95% of 39 falls in the 40 ms requests' bucket


async def test_the_status_page_numbers(
    client: httpx.AsyncClient, app: FastAPI, runtime: Any
) -> None:
    fresh = await client.get("/public/metrics")
    assert fresh.status_code == 200
    assert fresh.json() == {"uptime_7d": None, "jobs_today": 0, "p95_ms": None}
    ops = slo.Recorder()
    for _ in range(runtime.settings.slo_min_requests):
        ops.record(500, 200)
    await ops.flush(runtime.db, everything=True)
    await slo.check(runtime.db, runtime.settings)  # breached (p95 500 ms)
    await age_stats(runtime, timedelta(hours=1))
    await slo.check(runtime.db, runtime.settings)  # an empty window: met
    assert (await client.get("/public/metrics")).json() == fresh.json()  # cached a minute
    del app.state.public_metrics  # the minute has passed
    body = (await client.get("/public/metrics")).json()
    assert body["uptime_7d"] == 0.5
    assert body["p95_ms"] is None
    assert "users" not in json.dumps(body)


def test_levqor_slo_prints_the_state(cli_env: Settings) -> None:
    answer = CliRunner().invoke(cli_app, ["slo", "--json"])
    assert answer.exit_code == 0, answer.output
    body = json.loads(answer.stdout)
    assert (body["status"], body["requests"], body["target_p95_ms"]) == ("ok", 0, 200)
    table = CliRunner().invoke(cli_app, ["slo"])
    assert "p95 latency" in table.stdout
