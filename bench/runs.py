"""End-to-end runs: webhook -> one `http_request` step -> a local HTTP server.

    python bench/runs.py [--backend sqlite|postgres|both] [--duration 30] [--connections 50]
                         [--metrics on|off|compare] [--reps 3] [--intake-backlog-s S]
                         [--sqlite-synchronous FULL|NORMAL] [--up-worker-processes N]

sqlite: `levqor up` (API, worker and scheduler in one process), started from nothing:
time to first answer and resident memory are measured too. postgres: `levqor serve`
plus `levqor worker` processes. wrk posts to the workflow's webhook URL for `--duration`
seconds; the report gives the webhook's answer latency, the runs finished per second
during the load and the backlog left when it stopped (sustained throughput), and runs/s
from the first accepted call until every accepted run has succeeded (end to end, drain
included). The step's target keeps connections alive with TCP_NODELAY, as real services
do (peer-bench's echo server). `--metrics compare` runs each backend with Prometheus
metrics on and off (`LEVQOR_METRICS_ENABLED`), alternating, `--reps` times each, and
reports the medians and the cost of the metrics in percent. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.api import WRK_DONE, free_port, postgres_database

PASSWORD = "benchmark password 1"


class Sink(BaseHTTPRequestHandler):
    """The step's target: answers 200 at once, keeping the connection open."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        return


@contextmanager
def sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_ready(url: str, timeout_s: float = 60) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.01)
    raise TimeoutError("no answer")


def environment(
    data_dir: Path, database_url: str | None, args: argparse.Namespace | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    env.update(
        {
            "LEVQOR_DATA_DIR": str(data_dir),
            "LEVQOR_ALLOW_PRIVATE_URLS": "127.0.0.1/32",
            "LEVQOR_RATE_LIMIT_WEBHOOK_PER_MINUTE": str(10**9),
            "LEVQOR_LOG_LEVEL": "WARNING",
            "LEVQOR_RATE_LIMIT_PER_MINUTE": str(10**9),
            "LEVQOR_FREE_CREDITS": str(10**9),
            "LEVQOR_MAX_RUNNING_JOBS_PER_USER": "100000",
            "LEVQOR_RATE_LIMIT_AUTH_PER_MINUTE": str(10**9),
        }
    )
    if database_url:
        env["LEVQOR_DATABASE_URL"] = database_url
    if args is not None and args.intake_backlog_s is not None:
        env["LEVQOR_INTAKE_BACKLOG_S"] = str(args.intake_backlog_s)
    if args is not None and args.sqlite_synchronous is not None:
        env["LEVQOR_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    if args is not None and args.up_worker_processes is not None:
        env["LEVQOR_UP_WORKER_PROCESSES"] = str(args.up_worker_processes)
    return env


def webhook_workflow(url: str, target: str) -> tuple[str, dict[str, str]]:
    body = httpx.post(
        f"{url}/api/v1/auth/signup",
        json={"email": f"runs-{time.time_ns()}@example.com", "password": PASSWORD},
    ).json()
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    definition = {
        "name": "bench",
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "send",
                "connector": "http_request",
                "params": {"method": "POST", "url": target, "json": {"n": "{{ input.n }}"}},
            }
        ],
    }
    created = httpx.post(
        f"{url}/api/v1/workflows", json={"definition": definition}, headers=headers
    ).json()
    return created["webhook_url"].split(":", 2)[2].split("/", 1)[1], headers


def drive(url: str, hook_path: str, args: argparse.Namespace) -> dict[str, Any]:
    script = (
        'wrk.method = "POST"\nwrk.body = \'{"n": 1}\'\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + WRK_DONE)
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "-s",
            handle.name,
            f"{url}/{hook_path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(handle.name)
    raw = json.loads(output.split("WRKJSON ", 1)[1].splitlines()[0])
    return {
        "accepted": raw["requests"] - raw["non_2xx"],
        "non_2xx": raw["non_2xx"],
        "webhook_requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "webhook_p50_ms": raw["p50_us"] / 1000,
        "webhook_p99_ms": raw["p99_us"] / 1000,
    }


def finished(url: str, headers: dict[str, str]) -> int:
    return runs_in(url, headers, "succeeded")


def runs_in(url: str, headers: dict[str, str], status: str) -> int:
    """How many of the user's runs are in `status`, counted through the API."""
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"status": status, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(f"{url}/api/v1/jobs", params=params, headers=headers, timeout=30).json()
        total += len(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    with sink() as target:
        hook_path, headers = webhook_workflow(url, target)
        started = time.perf_counter()
        result = drive(url, hook_path, args)
        load_ended = time.perf_counter()
        # What was finished when the load stopped is what the service sustains; what
        # it accepted beyond that is backlog, not throughput.
        during_load = finished(url, headers)
        result["runs_finished_per_s_during_load"] = round(during_load / args.duration, 1)
        # Counted on the server: wrk leaves out the calls still in flight when it stops.
        result["backlog_at_load_end"] = sum(
            runs_in(url, headers, status) for status in ("queued", "running")
        )
        while finished(url, headers) < result["accepted"]:
            if time.perf_counter() - started > args.timeout:
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        result["runs_succeeded"] = finished(url, headers)
        result["end_to_end_runs_per_s"] = round(result["runs_succeeded"] / elapsed, 1)
        result["drain_s_after_load"] = round(time.perf_counter() - load_ended, 1)
    return result


def bench_up(scratch: Path, args: argparse.Namespace, metrics_on: bool = True) -> dict[str, Any]:
    env = environment(scratch / f"up-{time.time_ns()}", None, args)
    env["LEVQOR_METRICS_ENABLED"] = "true" if metrics_on else "false"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "levqor", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        first_answer_s = wait_ready(url)
        idle_rss = rss_mib(process.pid)
        result = measure(url, args)
        result.update(
            {
                "first_answer_s": round(first_answer_s, 2),
                "idle_rss_mib": round(idle_rss, 1),
                "loaded_rss_mib": round(rss_mib(process.pid), 1),
            }
        )
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {"backend": "sqlite (levqor up, one process)", **result}


def bench_postgres(
    scratch: Path, args: argparse.Namespace, metrics_on: bool = True
) -> dict[str, Any]:
    with postgres_database(args.postgres) as database_url:
        env = environment(scratch / f"pg-{time.time_ns()}", database_url, args)
        env["LEVQOR_METRICS_ENABLED"] = "true" if metrics_on else "false"
        subprocess.run(
            [sys.executable, "-m", "levqor", "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        processes = [
            subprocess.Popen(
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
                    "1",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        processes += [
            subprocess.Popen(
                [sys.executable, "-m", "levqor", "worker", "--concurrency", "20"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            result = measure(url, args)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
    return {"backend": "postgres (serve x1 + worker x1)", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--metrics", choices=["on", "off", "compare"], default="on")
    parser.add_argument(
        "--intake-backlog-s",
        type=float,
        default=None,
        help="LEVQOR_INTAKE_BACKLOG_S for the servers (0: no back-pressure); the default's",
    )
    parser.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], default=None)
    parser.add_argument("--up-worker-processes", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3, help="with --metrics compare")
    args = parser.parse_args()
    benches = []
    if args.backend in ("sqlite", "both"):
        benches.append(bench_up)
    if args.backend in ("postgres", "both"):
        benches.append(bench_postgres)
    report: dict[str, Any] = {
        "benchmark": "runs",
        "connections": args.connections,
        "duration_s": args.duration,
    }
    with tempfile.TemporaryDirectory() as scratch:
        if args.metrics == "compare":
            report["comparisons"] = [compare(bench, Path(scratch), args) for bench in benches]
        else:
            on = args.metrics == "on"
            report["results"] = [
                {**bench(Path(scratch), args, on), "metrics": args.metrics} for bench in benches
            ]
    print(json.dumps(report, indent=2))


COMPARED = ("webhook_requests_per_s", "end_to_end_runs_per_s", "webhook_p50_ms", "webhook_p99_ms")


def compare(bench: Any, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same bench with metrics on and off, alternating; medians and the cost."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(args.reps):
        for metrics_on in (True, False):
            runs[metrics_on].append(bench(scratch, args, metrics_on))
    medians = {
        label: {key: round(statistics.median(run[key] for run in runs[on]), 1) for key in COMPARED}
        for label, on in (("on", True), ("off", False))
    }
    cost = {
        key: round(100 * (medians["off"][key] - medians["on"][key]) / medians["off"][key], 1)
        for key in ("webhook_requests_per_s", "end_to_end_runs_per_s")
    }
    return {
        "backend": runs[True][0]["backend"],
        "reps": args.reps,
        "median_metrics_on": medians["on"],
        "median_metrics_off": medians["off"],
        "metrics_cost_percent": cost,  # throughput lost to the metrics (negative: noise)
    }


if __name__ == "__main__":
    main()
