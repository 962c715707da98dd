"""`levqor serve`: N API processes, each with its own SO_REUSEPORT listening socket.

uvicorn's own multi-process mode shares one listening socket, and whichever process wakes
first accepts: a burst of new connections can land 13/37 on two processes, so one core
saturates while the other idles. With a socket per process the kernel spreads connections
across them by hash. The parent only supervises: it restarts a process that dies and
stops them all on SIGINT/SIGTERM.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import multiprocess

from levqor.logging import get_logger

log = get_logger("levqor.serve")
APP = "levqor.app:app_from_environment"
RESTART_BACKOFF_S = 1.0
STARTUP_FAILURE = 3  # uvicorn's exit code when the app's startup fails (e.g. old schema)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_worker(host: str, port: int, forwarded_allow_ips: str) -> None:
    sock = listening_socket(host, port)
    config = uvicorn.Config(
        APP,
        factory=True,
        access_log=False,
        log_level="warning",
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(
    host: str, port: int, workers: int, forwarded_allow_ips: str, metrics_dir: Path | None = None
) -> int:
    """Run `workers` API processes until SIGINT or SIGTERM; the exit code to return.

    A process that dies is restarted; one that cannot start (startup failure) would fail
    again, so that stops everything with an error instead of a restart loop.
    """
    listening_socket(host, port).close()  # fail here, clearly, if the port is taken
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(
            target=run_worker, args=(host, port, forwarded_allow_ips), daemon=False
        )
        process.start()
        return process

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    processes = [start() for _ in range(workers)]
    exit_code = 0
    while not stopping:
        time.sleep(0.2)
        for index, process in enumerate(processes):
            if process.is_alive() or stopping:
                continue
            if process.exitcode == STARTUP_FAILURE:
                log.error("api_process_cannot_start", pid=process.pid)
                stopping, exit_code = True, 1
                break
            log.warning("api_process_died", pid=process.pid, exitcode=process.exitcode)
            if process.pid is not None and metrics_dir is not None:
                multiprocess.mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
            time.sleep(RESTART_BACKOFF_S)
            processes[index] = start()
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=30)
    return exit_code
