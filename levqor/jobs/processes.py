"""`levqor up`'s worker processes: jobs run beside the API, not in its process, so a
flood of requests cannot starve them of the interpreter (and two cores are used).

Each child is `levqor worker --wake-stdin`: when this process queues a run, it writes a
byte to every child's stdin, which wakes the child at once (SQLite has no LISTEN/NOTIFY;
the child's poll stays as the fallback). A child that exits is started again after a
pause that doubles up to a minute (back to a second after a child that ran a minute);
the children see their stdin close, and stop, if this process dies without stopping
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

from levqor.config import Settings, environment_for
from levqor.logging import get_logger

log = get_logger("levqor.worker_processes")
RESTART_PAUSE_S, RESTART_PAUSE_MAX_S = 1.0, 60.0
STOP_GRACE_S = 5.0  # past the workers' own shutdown timeout


class WorkerProcesses:
    def __init__(
        self, settings: Settings, *, count: int, concurrency: int, wake: asyncio.Event
    ) -> None:
        self.settings = settings
        self.count = count
        self.concurrency = concurrency
        self.wake = wake
        self.children: list[asyncio.subprocess.Process] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Keep `count` workers running and woken until `stop`, then stop them."""
        keepers = [asyncio.create_task(self._keep_one(stop)) for _ in range(self.count)]
        forwarding = asyncio.create_task(self._forward_wakes(stop))
        try:
            await stop.wait()
        finally:
            forwarding.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)

    async def _keep_one(self, stop: asyncio.Event) -> None:
        pause = RESTART_PAUSE_S
        while not stop.is_set():
            child = await self._spawn()
            started = time.monotonic()
            self.children.append(child)
            ended = asyncio.create_task(child.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                stopping.cancel()
                await self._stop(child, ended)
                return
            stopping.cancel()
            self.children.remove(child)
            if time.monotonic() - started > RESTART_PAUSE_MAX_S:
                pause = RESTART_PAUSE_S  # it ran a good while: not a crash loop
            log.error(
                "worker_process_exited", pid=child.pid, code=child.returncode, restart_in_s=pause
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            pause = min(RESTART_PAUSE_MAX_S, pause * 2)

    async def _spawn(self) -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "levqor",
            "worker",
            "--concurrency",
            str(self.concurrency),
            "--wake-stdin",
            stdin=asyncio.subprocess.PIPE,
            env=environment_for(self.settings),
        )
        log.info("worker_process_started", pid=child.pid, concurrency=self.concurrency)
        return child

    async def _stop(self, child: asyncio.subprocess.Process, ended: asyncio.Task[int]) -> None:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
        grace = self.settings.worker_shutdown_timeout_s + STOP_GRACE_S
        try:
            await asyncio.wait_for(asyncio.shield(ended), timeout=grace)
        except TimeoutError:
            log.error("worker_process_killed", pid=child.pid)
            child.kill()
            await ended

    async def _forward_wakes(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.wake.wait()
            self.wake.clear()
            for child in self.children:
                if child.stdin is not None and not child.stdin.is_closing():
                    # Buffered, never awaited: a child that is slow to read misses
                    # nothing (one byte or many, it wakes once) and cannot block the API.
                    child.stdin.write(b"w")
