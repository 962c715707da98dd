"""Anomaly detection on hourly series: runs, failures, signups, API 5xx, LLM spend and
refunds, each judged against its trailing week.

A point is anomalous when it is beyond 3 standard deviations of the trailing window, or
beyond 3.5 robust deviations (the median and the median absolute deviation): a spike
inflates the standard deviation for a week and would hide the next one, which the robust
score still sees. Either way the point must also move by a floor (3 events, and a fifth of
the median) so that a quiet series' single event is not news. Nothing is judged before 48
hours of history. The share of failed runs is judged on its own: a jump of 20 points that
at least doubles the week's share, over at least 10 runs.

The scheduler looks at the last complete hours every hour; each anomaly is stored and
alerted once (one row per series and hour).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.models import User
from levqor.billing.models import LlmUsage, Refund
from levqor.config import Settings
from levqor.db import pages
from levqor.db.base import upsert, utc_hour, utcnow
from levqor.db.engine import Database
from levqor.jobs.models import FAILED, Job
from levqor.ops import alerts
from levqor.ops.models import Anomaly, RequestStats
from levqor.periodic import TickTask, at_most_every

TRAILING_HOURS = 7 * 24
MIN_HISTORY_HOURS = 48
Z_LIMIT = 3.0
ROBUST_LIMIT = 3.5
MIN_DELTA = 3.0
RELATIVE_DELTA = 0.2
RATIO_JUMP = 0.2
RATIO_MIN_RUNS = 10
RECENT_HOURS = 3  # complete hours judged each run (a missed run catches up)


@dataclass(frozen=True)
class Verdict:
    value: float
    low: float
    high: float
    score: float
    method: str  # zscore, robust


def judge(history: Sequence[float], value: float, *, both_ways: bool = False) -> Verdict | None:
    """Whether `value` is anomalous after `history` (oldest first); None when it is not,
    or when the history is too short to say."""
    if len(history) < MIN_HISTORY_HOURS:
        return None
    mean, deviation = statistics.fmean(history), statistics.pstdev(history)
    median = statistics.median(history)
    spread = 1.4826 * statistics.median(abs(point - median) for point in history)
    if spread == 0:  # mostly one value: the mean absolute deviation, as a normal's sigma
        spread = 1.2533 * statistics.fmean(abs(point - median) for point in history)
    moved = value - median
    if not both_ways and moved <= 0:
        return None
    if abs(moved) < max(MIN_DELTA, RELATIVE_DELTA * abs(median)):
        return None
    z = _ratio(value - mean, deviation)
    robust = _ratio(moved, spread)
    low = max(0.0, median - ROBUST_LIMIT * spread)
    high = median + ROBUST_LIMIT * spread
    if abs(z) >= Z_LIMIT:
        return Verdict(value, low, high, round(min(abs(z), 1e6), 2), "zscore")
    if abs(robust) >= ROBUST_LIMIT:
        return Verdict(value, low, high, round(min(abs(robust), 1e6), 2), "robust")
    return None


def _ratio(moved: float, spread: float) -> float:
    if spread > 0:
        return moved / spread
    return math.inf if moved else 0.0


def scan(series: Sequence[float], *, both_ways: bool = False) -> list[int]:
    """The indexes of the anomalous points of a whole series, each judged against the
    trailing window before it (as the hourly detector would have)."""
    return [
        index
        for index in range(len(series))
        if judge(series[max(0, index - TRAILING_HOURS) : index], series[index], both_ways=both_ways)
    ]


# --- the series ----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    model: Any
    at: Any  # the timestamp column
    value: Any  # what is added up per hour
    where: tuple[Any, ...] = ()
    both_ways: bool = False  # a drop is news too
    # What marks the start of its history (default: its own first row): failures have a
    # history of zeros from the first run on.
    started: Any = None


SOURCES = (
    Source("runs", Job, Job.created_at, func.count(), both_ways=True),
    Source(
        "failures",
        Job,
        Job.finished_at,
        func.count(),
        (Job.status == FAILED,),
        started=Job.created_at,
    ),
    Source("signups", User, User.created_at, func.count()),
    Source("api_5xx", RequestStats, RequestStats.slot_start, func.sum(RequestStats.errors)),
    Source("llm_spend", LlmUsage, LlmUsage.created_at, func.sum(LlmUsage.cost_micro_usd)),
    Source("refunds", Refund, Refund.created_at, func.count()),
)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


async def hourly(
    session: AsyncSession, source: Source, *, since: datetime, until: datetime
) -> tuple[list[float], datetime | None]:
    """The source's value for every hour in [since, until) (zeros kept), and the hour
    its history starts (its first row ever), None if it has none."""
    dialect = session.get_bind().dialect.name
    hour = utc_hour(source.at, dialect)
    rows = await session.execute(
        select(hour, source.value)
        .select_from(source.model)
        .where(source.at >= since, source.at < until, *source.where)
        .group_by(hour)
    )
    found = {str(key): float(total or 0) for key, total in rows}
    if source.started is not None:
        first = await session.scalar(select(func.min(source.started)))
    else:
        first = await session.scalar(
            select(func.min(source.at)).select_from(source.model).where(*source.where)
        )
    hours = int((until - since).total_seconds() // 3600)
    values = [found.get(f"{since + timedelta(hours=n):%Y-%m-%d %H}", 0.0) for n in range(hours)]
    return values, _hour(first) if first is not None else None


@dataclass(frozen=True)
class Found:
    series: str
    hour: datetime
    verdict: Verdict


async def detect(session: AsyncSession, *, now: datetime | None = None) -> list[Found]:
    """Anomalies among the last complete hours of every series."""
    end = _hour(now or utcnow())
    since = end - timedelta(hours=TRAILING_HOURS + RECENT_HOURS)
    found: list[Found] = []
    runs: list[float] = []
    failures: list[float] = []
    for source in SOURCES:
        values, first = await hourly(session, source, since=since, until=end)
        if source.name == "runs":
            runs = values
        if source.name == "failures":
            failures = values
        for back in range(RECENT_HOURS, 0, -1):
            at = len(values) - back
            hour = end - timedelta(hours=back)
            if first is None or hour - first < timedelta(hours=MIN_HISTORY_HOURS):
                continue  # too young to judge
            history = [v for n, v in enumerate(values[:at]) if since + timedelta(hours=n) >= first]
            verdict = judge(history[-TRAILING_HOURS:], values[at], both_ways=source.both_ways)
            if verdict is not None:
                found.append(Found(source.name, hour, verdict))
    found += _ratio_jumps(runs, failures, since, end)
    return found


def _ratio_jumps(
    runs: list[float], failures: list[float], since: datetime, end: datetime
) -> list[Found]:
    found = []
    for back in range(RECENT_HOURS, 0, -1):
        at = len(runs) - back
        if at < MIN_HISTORY_HOURS or runs[at] < RATIO_MIN_RUNS:
            continue
        trailing_runs = sum(runs[max(0, at - TRAILING_HOURS) : at])
        if trailing_runs < RATIO_MIN_RUNS:
            continue
        baseline = sum(failures[max(0, at - TRAILING_HOURS) : at]) / trailing_runs
        share = failures[at] / runs[at]
        if share - baseline >= RATIO_JUMP and share >= 2 * baseline:
            verdict = Verdict(
                round(share, 4),
                0.0,
                round(baseline + RATIO_JUMP, 4),
                round(share - baseline, 4),
                "ratio",
            )
            found.append(Found("failure_ratio", end - timedelta(hours=back), verdict))
    return found


# --- stored and alerted once ---------------------------------------------------------


async def record(db: Database, settings: Settings, *, now: datetime | None = None) -> list[Anomaly]:
    """Detect, store the new anomalies (one per series and hour) and alert each once."""
    new: list[Anomaly] = []
    async with db.session(write=True) as session, session.begin():
        for finding in await detect(session, now=now):
            dialect = session.get_bind().dialect.name
            statement = (
                upsert(dialect, Anomaly.__table__)
                .values(
                    series=finding.series,
                    hour=finding.hour,
                    value=finding.verdict.value,
                    expected_low=finding.verdict.low,
                    expected_high=finding.verdict.high,
                    score=finding.verdict.score,
                    method=finding.verdict.method,
                    found_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["series", "hour"])
                .returning(Anomaly.id)
            )
            inserted = await session.scalar(statement)
            if inserted is None:
                continue  # found before
            anomaly = await session.get(Anomaly, inserted)
            assert anomaly is not None
            new.append(anomaly)
            await alerts.record(
                session, settings, "warning", f"Anomaly in {finding.series}", _said(finding)
            )
    if new:
        await alerts.deliver_due(db, settings)
    return new


def _said(finding: Found) -> str:
    verdict, hour = finding.verdict, finding.hour
    return (
        f"{verdict.value:g} in the hour from {hour:%Y-%m-%d %H:00} UTC; the trailing week "
        f"expects {verdict.low:g} to {verdict.high:g} (score {verdict.score:g}, {verdict.method})."
    )


async def page(
    session: AsyncSession, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Anomaly], str | None]:
    return await pages.newest_first(
        session, select(Anomaly), at=Anomaly.found_at, key=Anomaly.id, limit=limit, cursor=cursor
    )


def tick_task(db: Database, settings: Settings, *, every_s: float = 3600) -> TickTask:
    async def hourly_check() -> object:
        return await record(db, settings)

    return at_most_every(every_s, hourly_check)
