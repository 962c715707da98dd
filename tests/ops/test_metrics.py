"""/metrics: Prometheus text that its own parser reads, route templates (never raw
paths), requests counted as made, the queue from the database, and every `serve`
process's counters added up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from levqor.db import migrate
from levqor.runtime import Runtime
from tests.conftest import _settings
from tests.factories import make_workflow, start
from tests.peers import free_port
from tests.test_serve import api_children, healthy, start_serve, wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and sorted labels (the parser refuses malformed text)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_are_counted_by_route_template(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    before = samples((await client.get("/metrics")).text)
    for _ in range(7):
        assert (await client.get("/api/v1/me", headers=account.headers)).status_code == 200
    for job in ("job_a", "job_b"):
        await client.get(f"/api/v1/jobs/{job}", headers=account.headers)  # 404s
    after_text = (await client.get("/metrics")).text
    after = samples(after_text)
    me = {"route": "/api/v1/me", "method": "GET"}
    assert (
        value(after, "levqor_http_request_duration_seconds_count", **me)
        - value(before, "levqor_http_request_duration_seconds_count", **me)
        == 7
    )
    assert (
        value(after, "levqor_http_requests_total", **me, status="2xx")
        - value(before, "levqor_http_requests_total", **me, status="2xx")
        == 7
    )
    jobs = {"route": "/api/v1/jobs/{job_id}", "method": "GET", "status": "4xx"}
    assert (
        value(after, "levqor_http_requests_total", **jobs)
        - value(before, "levqor_http_requests_total", **jobs)
        == 2
    )
    assert "job_a" not in after_text  # a raw path never becomes a label


async def test_the_queue_and_job_outcomes(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    before = samples((await client.get("/metrics")).text)
    workflow = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    for _ in range(2):
        await start(client, account, workflow)
    after = samples((await client.get("/metrics")).text)
    assert value(after, "levqor_queue_jobs", status="queued") == 2
    assert value(after, "levqor_queue_jobs", status="failed") == 0
    assert value(after, "levqor_workers_alive") == 0
    assert (
        value(after, "levqor_jobs_total", outcome="enqueued")
        - value(before, "levqor_jobs_total", outcome="enqueued")
        == 2
    )
    assert value(after, "levqor_spend_guard_paused") == 0


def counted(url: str, labels: dict[str, str], expected: float, timeout_s: float = 10) -> float:
    """The count once it reaches `expected` (or the deadline passes): a request is counted
    just after its answer has gone out, so a scrape may come a moment before."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = samples(httpx.get(f"{url}/metrics").text)
        now = value(found, "levqor_http_requests_total", **labels)
        if now >= expected or time.monotonic() > deadline:
            return now


def test_every_serve_process_is_counted(tmp_path: Path) -> None:
    """Two processes answer (a new connection each time: the kernel spreads them over
    both sockets); /metrics, answered by either, counts every answer of both. /ready is
    asked only here, so its count starts at nothing."""
    migrate.upgrade(_settings(data_dir=tmp_path))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ready = {"route": "/ready", "method": "GET", "status": "2xx"}
    parent = start_serve(tmp_path, port)
    try:
        wait_until(lambda: healthy(url) and len(api_children(parent.pid)) == 2)
        for _ in range(40):
            assert httpx.get(f"{url}/ready").status_code == 200
        total = counted(url, ready, 40)
        pids = {
            file.stem.rsplit("_", 1)[-1] for file in (tmp_path / f"metrics-{port}").glob("*.db")
        }
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.communicate(timeout=30)
    assert total == 40
    assert len(pids) >= 2  # each process writes its own values, and /metrics adds them up


def test_metrics_can_be_turned_off_for_measuring_their_cost(tmp_path: Path) -> None:
    """`LEVQOR_METRICS_ENABLED=false` (in a process of its own: it is for the process)."""
    program = (
        "from levqor import metrics\n"
        "from levqor.bootstrap import build_runtime\n"
        "from tests.conftest import _settings\n"
        "from pathlib import Path\n"
        f"build_runtime(_settings(data_dir=Path({str(tmp_path)!r}), metrics_enabled=False))\n"
        "metrics.labelled(metrics.JOBS, 'enqueued').inc()\n"
        "metrics.labelled(metrics.HTTP_LATENCY, '/x', 'GET').observe(1)\n"
        "from prometheus_client import generate_latest\n"
        "print('levqor_jobs_total{' in generate_latest().decode(), type(metrics.JOBS).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert done.stdout.split() == ["False", "_Silent"]
