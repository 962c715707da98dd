"""Hostile tenants against a real `levqor up`: one user's template bombs, poison inputs
and broken crons cost that user failed runs with reasons, and nobody else anything."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.peers import UpProcess

pytestmark = pytest.mark.hostile

# About half a second of one C call per iteration: a render that outlives its step.
SLOW_BOMB = (
    "{% for i in range(50) %}{{ (range(100000) | list | string) | wordwrap(1) | length }}"
    "{% endfor %}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    up = UpProcess(
        Path(tmp_path_factory.mktemp("hostile")) / "data",
        rate_limit_per_minute="100000",
        free_credits="100000",
    )
    try:
        up.wait_ready()
        yield up
    finally:
        up.stop()


def account(url: str) -> dict[str, str]:
    signed_up = httpx.post(
        f"{url}/api/v1/auth/signup",
        json={"email": f"t-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD},
    )
    assert signed_up.status_code == 201, signed_up.text
    return {"Authorization": f"Bearer {signed_up.json()['access_token']}"}


def workflow(url: str, headers: dict[str, str], step: dict[str, Any], **extra: Any) -> str:
    definition = {"name": "t", "steps": [{"id": "a", "connector": "transform", **step}], **extra}
    created = httpx.post(
        f"{url}/api/v1/workflows", json={"definition": definition}, headers=headers
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def run(url: str, headers: dict[str, str], workflow_id: str, payload: Any = None) -> str:
    started = httpx.post(
        f"{url}/api/v1/workflows/{workflow_id}/runs", json={"input": payload or {}}, headers=headers
    )
    assert started.status_code == 202, started.text
    return str(started.json()["job_id"])


def wait_final(url: str, headers: dict[str, str], job_id: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never finished: {job}")


def test_the_api_answers_while_a_template_bomb_renders(server: UpProcess) -> None:
    attacker = account(server.url)
    bomb = workflow(server.url, attacker, {"params": {"x": SLOW_BOMB}, "timeout_s": 4})
    job_id = run(server.url, attacker, bomb)
    deadline = time.monotonic() + 10
    while (
        httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=attacker).json()["status"]
        != "running"
    ):
        assert time.monotonic() < deadline, "the bomb never started"
        time.sleep(0.05)
    latencies = []
    # One client: `httpx.get` builds a client (and its TLS context) per call, about 50 ms
    # of this test's own CPU on a slow machine, which is not the server's answer.
    with httpx.Client(base_url=server.url) as probe:
        for _ in range(20):
            started = time.perf_counter()
            assert probe.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    assert statistics.median(latencies) < 0.1, latencies
    assert sorted(latencies)[-3] < 0.1, latencies  # 90% within 100 ms on a shared CI box

    neighbour = account(server.url)
    plain = workflow(server.url, neighbour, {"params": {"hi": "Hi {{ input.name }}"}})
    done = wait_final(server.url, neighbour, run(server.url, neighbour, plain, {"name": "Ada"}))
    assert done["status"] == "succeeded"
    assert done["result"] == {"hi": "Hi Ada"}

    failed = wait_final(server.url, attacker, job_id)
    assert failed["status"] == "failed"
    assert "took longer than 4 s" in failed["error"]


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
         "loop iterations"),
        ("{{ 9 ** (9 ** 9) }}", "too large"),
        ("{{ 'ab' * 100000000 }}", "too large"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}{{ ns.s }}", "out of memory"),
    ],
)  # fmt: skip
def test_template_bombs_fail_their_run_with_a_reason(
    server: UpProcess, template: str, reason: str
) -> None:
    attacker = account(server.url)
    job = wait_final(server.url, attacker, run(server.url, attacker, workflow(
        server.url, attacker, {"params": {"x": template}}
    )))  # fmt: skip
    assert job["status"] == "failed"
    assert reason in job["error"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_poison_inputs_and_broken_crons_are_refused_at_the_door(server: UpProcess) -> None:
    attacker = account(server.url)
    plain = workflow(server.url, attacker, {"params": {"n": "{{ input.n }}"}})
    for body in (b'{"input": {"n": 99999999999999999999999}}', b'{"input": {"n": NaN}}'):
        refused = httpx.post(
            f"{server.url}/api/v1/workflows/{plain}/runs",
            content=body,
            headers={**attacker, "content-type": "application/json"},
        )
        assert refused.status_code == 422, refused.text
    for cron in ("0 0 30 2 *", "* * * * * *"):
        definition = {
            "name": "never",
            "trigger": {"type": "schedule", "cron": cron},
            "steps": [{"id": "a", "connector": "transform"}],
        }
        refused = httpx.post(
            f"{server.url}/api/v1/workflows", json={"definition": definition}, headers=attacker
        )
        assert refused.status_code == 422, refused.text


def test_a_body_over_the_limit_is_answered_not_reset(server: UpProcess) -> None:
    """The 413 arrives whole even though the client was still sending (the server reads
    the rest before answering, instead of resetting the connection)."""
    for _ in range(3):
        answer = httpx.post(
            f"{server.url}/api/v1/auth/login",
            content=b"x" * (3 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 413
        assert answer.json()["code"] == "payload_too_large"


def test_a_quiet_tenant_keeps_its_latency_while_another_attacks(server: UpProcess) -> None:
    """User B's runs, end to end as the server records them (created -> finished), keep
    their p99 within twice the quiet baseline (plus 50 ms for a shared CI machine)
    while user A's bombs fill their share of the worker and sandboxes."""
    quiet = account(server.url)
    plain = workflow(server.url, quiet, {"params": {"hi": "Hi {{ input.name }}"}})

    def p99(runs: int) -> float:
        took = []
        for n in range(runs):
            job = wait_final(server.url, quiet, run(server.url, quiet, plain, {"name": n}))
            assert job["status"] == "succeeded", job
            took.append(seconds_between(job["created_at"], job["finished_at"]))
        return sorted(took)[int(0.99 * (runs - 1))]

    baseline = p99(30)
    attacker = account(server.url)
    bombs = [
        run(server.url, attacker, workflow(server.url, attacker, step))
        for step in (
            {"params": {"x": SLOW_BOMB}, "timeout_s": 8},
            {"params": {"x": SLOW_BOMB}, "timeout_s": 8},
            {"params": {"x": "{% for i in range(100000) %}{% for j in range(100000) %}"
                             "{% endfor %}{% endfor %}"}},
            {"params": {"x": SLOW_BOMB}, "timeout_s": 8},
        )
    ]  # fmt: skip
    under_attack = p99(30)
    assert under_attack <= 2 * baseline + 0.05, (baseline, under_attack)
    for job_id in bombs:
        assert wait_final(server.url, attacker, job_id)["status"] == "failed"


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
