"""API benchmark: authenticated GET /api/v1/me and POST /api/v1/auth/refresh.

Starts `levqor serve` (2 processes by default) on SQLite and on PostgreSQL + Redis, drives
it with wrk at 50 concurrent connections and prints one JSON report:

    python bench/api.py [--backend sqlite|postgres|both] [--duration 10] [--connections 50]
                        [--tokens 1]

wrk is a Debian package (`apt-get install wrk`). For refresh, every wrk thread owns one
connection and one login, and chains the refresh tokens it is given, so every request is a
real rotation (a failed one would revoke its family and show up as errors).

`GET /api/v1/me` sends one access token on every connection by default, as one client
polling at 50 connections does: its requests that wait together share the load of their
caller (`levqor.accounts.coalesce`). `--tokens 50` rotates over 50 logins instead, so
concurrent requests rarely share a credential: the figure for many distinct callers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

PASSWORD = "benchmark password 1"
UNLIMITED = str(10**9)
WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""
ROTATING_TOKENS_SCRIPT = """
local tokens = {%s}
local next_thread = 0
local sent = 0
function setup(thread)
  thread:set("sent", next_thread * 7)
  next_thread = next_thread + 1
end
function request()
  sent = sent + 1
  return wrk.format("GET", "/api/v1/me",
    {["Authorization"] = "Bearer " .. tokens[sent %% #tokens + 1]})
end
"""
REFRESH_SCRIPT = """
local tokens = {%s}
local next_token = 1
function setup(thread)
  thread:set("token", tokens[next_token])
  next_token = next_token + 1
end
function request()
  return wrk.format("POST", "/api/v1/auth/refresh",
    {["Content-Type"] = "application/json"}, '{"refresh_token":"' .. token .. '"}')
end
function response(status, headers, body)
  local fresh = body:match('"refresh_token":"([^"]+)"')
  if fresh then token = fresh end
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"levqor_bench_{int(time.time())}"
    subprocess.run(["psql", admin_url, "-qc", f'CREATE DATABASE "{name}"'], check=True)
    try:
        # the path names the database; a query (`?host=/var/run/postgresql`) is kept
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        subprocess.run(
            ["psql", admin_url, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
        )


@contextmanager
def levqor_serve(env: dict[str, str], workers: int) -> Iterator[str]:
    port = free_port()
    subprocess.run(
        [sys.executable, "-m", "levqor", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL
    )
    process = subprocess.Popen(
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
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise TimeoutError("levqor serve did not become ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_wrk(
    url: str,
    path: str,
    script: str,
    *,
    threads: int,
    connections: int,
    duration_s: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + WRK_DONE)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "-s", handle.name]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, url + path], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(handle.name)
    raw = json.loads(output.split("WRKJSON ", 1)[1].splitlines()[0])
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["socket_errors"],
    }


def logins(url: str, count: int) -> tuple[list[str], list[str]]:
    """Access tokens and refresh tokens of `count` logins of one new user."""
    email = f"bench-{time.time_ns()}@example.com"
    body = httpx.post(
        f"{url}/api/v1/auth/signup", json={"email": email, "password": PASSWORD}
    ).json()
    access_tokens, refresh_tokens = [body["access_token"]], []
    with httpx.Client(base_url=url) as client:
        for _ in range(count):
            login = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
            access_tokens.append(login.json()["access_token"])
            refresh_tokens.append(login.json()["refresh_token"])
    return access_tokens, refresh_tokens


def bench_backend(name: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    with levqor_serve(env, args.workers) as url:
        access_tokens, refresh_tokens = logins(url, max(args.connections, args.tokens))
        if args.tokens == 1:
            get_script, auth = "", {"Authorization": f"Bearer {access_tokens[0]}"}
        else:
            quoted = ", ".join(f'"{token}"' for token in access_tokens[: args.tokens])
            get_script, auth = ROTATING_TOKENS_SCRIPT % quoted, {}
        me = [
            run_wrk(
                url,
                "/api/v1/me",
                get_script,
                threads=2,
                connections=args.connections,
                duration_s=duration,
                headers=auth,
            )
            for duration in (2, args.duration)  # a warm-up, then the measurement
        ][-1]
        script = REFRESH_SCRIPT % ", ".join(f'"{token}"' for token in refresh_tokens)
        refresh = run_wrk(
            url,
            "/",
            script,
            threads=args.connections,
            connections=args.connections,
            duration_s=args.duration,
        )
    return {"backend": name, "get_me": me, "post_refresh": refresh}


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env.update(
        {
            "LEVQOR_DATA_DIR": str(data_dir),
            "LEVQOR_RATE_LIMIT_PER_MINUTE": UNLIMITED,
            "LEVQOR_RATE_LIMIT_AUTH_PER_MINUTE": UNLIMITED,
            "LEVQOR_LOGIN_MAX_FAILURES": UNLIMITED,
        }
    )
    return env


def each_backend(
    args: argparse.Namespace,
    bench: Callable[[str, dict[str, str], argparse.Namespace], dict[str, Any]],
) -> list[dict[str, Any]]:
    """`bench` on SQLite, then on a fresh PostgreSQL database with Redis (`--backend`)."""
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.backend in ("sqlite", "both"):
            results.append(bench("sqlite", base_env(Path(scratch) / "sqlite"), args))
        if args.backend in ("postgres", "both"):
            with postgres_database(args.postgres) as database_url:
                env = base_env(Path(scratch) / "postgres")
                env["LEVQOR_DATABASE_URL"] = database_url
                env["LEVQOR_REDIS_URL"] = args.redis
                results.append(bench("postgres+redis", env, args))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="levqor serve processes")
    parser.add_argument(
        "--tokens", type=int, default=1, help="access tokens GET /api/v1/me rotates over"
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    results = each_backend(args, bench_backend)
    report = {
        "benchmark": "api",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "tokens": args.tokens,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
