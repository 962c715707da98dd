"""`levqor up` from nothing: migrates, creates the first admin once, serves."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.peers import UpProcess


def assert_a_workflow_runs(url: str, token: str) -> None:
    """What a new user does first: create a workflow, run it, watch it finish."""
    headers = {"Authorization": f"Bearer {token}"}
    definition = {
        "name": "hello",
        "steps": [
            {"id": "greet", "connector": "transform", "params": {"text": "Hi {{ input.name }}"}}
        ],
    }
    workflow = httpx.post(
        f"{url}/api/v1/workflows", json={"definition": definition}, headers=headers
    ).json()
    run = httpx.post(
        f"{url}/api/v1/workflows/{workflow['id']}/runs",
        json={"input": {"name": "Ada"}},
        headers=headers,
    )
    assert run.status_code == 202
    deadline = time.monotonic() + 20
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{run.json()['job_id']}", headers=headers).json()
        if job["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded", job
    assert job["result"] == {"text": "Hi Ada"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "levqor-data"


def test_first_start_creates_an_admin_that_can_log_in(data_dir: Path) -> None:
    first = UpProcess(data_dir)
    try:
        first.wait_ready()
        assert httpx.get(f"{first.url}/ready").json()["checks"] == {"database": "ok"}
    finally:
        output = first.stop()
    match = re.search(r"e-mail\s+(\S+)\s+password\s+(\S+)", output)
    assert match, output
    email, password = match.groups()
    assert (data_dir / "levqor.db").exists()

    second = UpProcess(data_dir)
    try:
        second.wait_ready()
        login = httpx.post(
            f"{second.url}/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert login.status_code == 200
        assert login.json()["user"]["role"] == "admin"
        assert_a_workflow_runs(second.url, login.json()["access_token"])
    finally:
        again = second.stop()
    assert "First start" not in again
    assert password not in again


def test_links_follow_the_address_up_listens_on(data_dir: Path) -> None:
    """No LEVQOR_PUBLIC_URL: a webhook URL names the port `up` serves, and it answers."""
    up = UpProcess(data_dir)
    try:
        up.wait_ready()
        output = up.read_log()
        match = re.search(r"e-mail\s+(\S+)\s+password\s+(\S+)", output)
        assert match, output
        email, password = match.groups()
        token = httpx.post(
            f"{up.url}/api/v1/auth/login", json={"email": email, "password": password}
        ).json()["access_token"]
        step = {"id": "echo", "connector": "transform", "params": {"n": "{{ input.n }}"}}
        definition = {"name": "hook", "trigger": {"type": "webhook"}, "steps": [step]}
        workflow = httpx.post(
            f"{up.url}/api/v1/workflows",
            json={"definition": definition},
            headers={"authorization": f"Bearer {token}"},
        ).json()
        assert workflow["webhook_url"].startswith(f"{up.url}/hooks/")
        assert httpx.post(workflow["webhook_url"], json={"n": 1}).status_code == 202
    finally:
        output = up.stop()
    # Written to a file, not a terminal: the login example is one unbroken line.
    [example] = [line for line in output.splitlines() if "curl -X POST" in line]
    assert example.rstrip().endswith("""'{"email":"admin@example.com","password":"…"}'""")


def children_running_worker(pid: int) -> list[int]:
    """The processes `levqor up` started that run `levqor worker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"worker" in command:
            found.append(int(entry.name))
    return found


def admin_token(up: UpProcess) -> str:
    match = re.search(r"e-mail\s+(\S+)\s+password\s+(\S+)", up.read_log())
    assert match
    email, password = match.groups()
    login = httpx.post(f"{up.url}/api/v1/auth/login", json={"email": email, "password": password})
    token: str = login.json()["access_token"]
    return token


def test_jobs_run_in_a_worker_process_woken_by_the_api_and_restarted_if_it_dies(
    data_dir: Path,
) -> None:
    # A 60 s poll: a run that finishes in the test's 20 s was woken by the API.
    up = UpProcess(data_dir, worker_poll_interval_s="60")
    try:
        up.wait_ready()
        [worker] = children_running_worker(up.process.pid)
        token = admin_token(up)
        assert_a_workflow_runs(up.url, token)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            restarted = children_running_worker(up.process.pid)
            if restarted and restarted != [worker]:
                break
            time.sleep(0.05)
        assert restarted
        assert restarted != [worker]
        assert_a_workflow_runs(up.url, token)
    finally:
        up.stop()
    # Stopping `up` stops its worker processes.
    assert not Path(f"/proc/{restarted[0]}").exists()


def test_a_worker_process_stops_when_up_dies_without_stopping_it(data_dir: Path) -> None:
    up = UpProcess(data_dir)
    try:
        up.wait_ready()
        [worker] = children_running_worker(up.process.pid)
        up.process.kill()  # no SIGTERM, no shutdown: the worker's stdin just closes
        up.process.wait(timeout=15)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker_alive(worker):
            time.sleep(0.05)
        assert not worker_alive(worker)
    finally:
        if up.process.poll() is None:
            up.stop()
        up.log.close()


def worker_alive(pid: int) -> bool:
    """Running, not a zombie waiting for its dead parent's reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_metrics_count_what_the_worker_processes_did(data_dir: Path) -> None:
    """Runs finish in `up`'s worker processes: /metrics, answered by the API's, adds
    their counters to its own (prometheus-client's multi-process mode)."""
    from tests.ops.test_metrics import samples, value

    up = UpProcess(data_dir)
    try:
        up.wait_ready()
        assert_a_workflow_runs(up.url, admin_token(up))
        found = samples(httpx.get(f"{up.url}/metrics").text)
    finally:
        up.stop()
    assert value(found, "levqor_jobs_total", outcome="enqueued") == 1  # the API's
    assert value(found, "levqor_jobs_total", outcome="succeeded") == 1  # the worker's
    assert value(found, "levqor_step_duration_seconds_count", connector="transform") == 1
    assert value(found, "levqor_http_requests_total", route="/health", method="GET", status="2xx")
