"""Anomaly detection: spikes found in a synthetic series (a second one too, which a
plain z-score would miss after the first), none in a flat noisy one, none before the
minimum history; from the database, stored and alerted once."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from levqor.db.base import utcnow
from levqor.jobs.models import FAILED, Job
from levqor.ops import anomalies
from levqor.ops.models import Alert, Anomaly
from levqor.runtime import Runtime
from tests.factories import make_admin


def noisy(hours: int, level: float = 100, spread: float = 5, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, rng.gauss(level, spread)) for _ in range(hours)]


def test_spikes_are_found_and_the_first_does_not_hide_the_second() -> None:
    series = noisy(300)
    series[120] = 5000  # a huge spike: a week of inflated standard deviation after it
    series[200] = 250  # a smaller one within that week
    assert anomalies.scan(series) == [120, 200]
    hidden = anomalies.judge(series[200 - 168 : 200], 250)
    assert hidden is not None
    assert hidden.method == "robust"  # the z-score alone would have missed it


def test_a_flat_noisy_series_has_none() -> None:
    for seed in range(5):
        assert anomalies.scan(noisy(400, seed=seed), both_ways=True) == []


def test_nothing_is_judged_before_the_minimum_history() -> None:
    series = [*noisy(anomalies.MIN_HISTORY_HOURS - 1), 5000.0]
    assert anomalies.scan(series) == []
    assert anomalies.scan([*noisy(anomalies.MIN_HISTORY_HOURS), 5000.0]) == [
        anomalies.MIN_HISTORY_HOURS
    ]


def test_a_drop_in_runs_counts_a_rise_in_failures_only_up() -> None:
    history = noisy(100)
    assert anomalies.judge(history, 0, both_ways=True) is not None
    assert anomalies.judge(history, 0) is None


def test_a_quiet_series_single_event_is_not_news() -> None:
    sparse = [0.0] * 100
    sparse[50] = 1.0
    assert anomalies.judge(sparse, 1.0) is None  # below the floor of 3 events
    assert anomalies.judge(sparse, 12.0) is not None


async def add_runs(
    runtime: Runtime, user_id: str, workflow_id: str, hours: list[tuple[int, int, int]]
) -> None:
    """(hours ago, runs, of which failed) for each hour."""
    now = utcnow()
    async with runtime.db.write() as session, session.begin():
        for ago, runs, failed in hours:
            at = now.replace(minute=30, second=0, microsecond=0) - timedelta(hours=ago)
            for n in range(runs):
                session.add(
                    Job(
                        user_id=user_id,
                        workflow_id=workflow_id,
                        workflow_version=1,
                        input={},
                        status=FAILED if n < failed else "succeeded",
                        created_at=at,
                        finished_at=at,
                        run_at=at,
                    )
                )


async def test_a_spike_in_runs_is_stored_and_alerted_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow = (
        await client.post(
            "/api/v1/workflows",
            headers=account.headers,
            json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
        )
    ).json()["id"]
    rng = random.Random(3)
    history = [(ago, 8 + rng.randint(-2, 2), 0) for ago in range(2, 80)]
    await add_runs(runtime, account.id, workflow, [*history, (1, 60, 30)])  # the last hour
    new = await anomalies.record(runtime.db, runtime.settings)
    assert sorted(anomaly.series for anomaly in new) == ["failure_ratio", "failures", "runs"]
    runs = next(anomaly for anomaly in new if anomaly.series == "runs")
    assert runs.value == 60
    assert runs.expected_high < 60
    assert await anomalies.record(runtime.db, runtime.settings) == []  # once
    async with runtime.db.read() as session:
        titles = sorted(alert.title for alert in await session.scalars(select(Alert)))
        stored = len((await session.scalars(select(Anomaly))).all())
    assert titles == ["Anomaly in failure_ratio", "Anomaly in failures", "Anomaly in runs"]
    assert stored == 3
    await make_admin(runtime, account)
    listed = (await client.get("/api/v1/admin/anomalies", headers=account.headers)).json()
    assert {item["series"] for item in listed["data"]} == {"runs", "failures", "failure_ratio"}
