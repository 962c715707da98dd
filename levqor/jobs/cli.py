"""`levqor worker`: run jobs until SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import typer

from levqor.config import load_settings
from levqor.jobs.worker import Worker
from levqor.logging import configure_logging
from levqor.runtime import build_runtime


def worker(
    concurrency: int = typer.Option(10, min=1, help="Jobs run at once by this process."),
) -> None:
    """Run jobs. Start any number, on any hosts sharing the database; SIGTERM stops cleanly."""
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    asyncio.run(_run(concurrency))


async def _run(concurrency: int) -> None:
    runtime = build_runtime(load_settings())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await Worker(runtime, concurrency=concurrency).run(stop)
    finally:
        await runtime.close()
