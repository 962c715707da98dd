"""`levqor serve`: several processes on one port, a dead one replaced, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from levqor.db import migrate
from tests.conftest import _settings
from tests.peers import free_port


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def api_children(pid: int) -> set[int]:
    """Worker processes (spawn also starts a resource tracker, which is not one)."""
    return {
        child
        for child in children(pid)
        if "resource_tracker" not in Path(f"/proc/{child}/cmdline").read_text()
    }


def wait_until(condition: object, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def start_serve(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env["LEVQOR_DATA_DIR"] = str(data_dir)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "levqor",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_replaces_a_killed_process_and_stops_cleanly(tmp_path: Path) -> None:
    migrate.upgrade(_settings(data_dir=tmp_path))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    parent = start_serve(tmp_path, port)
    try:
        wait_until(lambda: healthy(url) and len(api_children(parent.pid)) == 2)
        before = api_children(parent.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(api_children(parent.pid) - {victim}) == 2)
        assert victim not in api_children(parent.pid)
        statuses = {httpx.get(f"{url}/health").status_code for _ in range(20)}
        assert statuses == {200}
    finally:
        parent.send_signal(signal.SIGTERM)
        output, _ = parent.communicate(timeout=30)
    assert parent.returncode == 0, output
    assert "api_process_died" in output


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    parent = start_serve(tmp_path, free_port())
    try:
        output, _ = parent.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        parent.kill()
        pytest.fail("serve kept restarting processes that cannot start")
    assert parent.returncode == 1
    assert "levqor migrate" in output
