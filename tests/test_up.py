"""`levqor up` from nothing: migrates, creates the first admin once, serves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.peers import free_port


class UpProcess:
    def __init__(self, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir.parent / f"up-{self.port}.log", "w+")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
        env["LEVQOR_LOG_JSON"] = "true"
        env.update({f"LEVQOR_{name.upper()}": value for name, value in settings.items()})
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "levqor",
                "up",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            # A file, not a pipe: a busy server's log would fill a pipe nobody reads
            # and block the server on its next write.
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.output = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"levqor up exited: {self.read_log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError("levqor up did not answer")

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=15)
        self.output = self.read_log()
        self.log.close()
        return self.output

    def read_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


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
