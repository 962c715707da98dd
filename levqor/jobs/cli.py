"""`levqor worker` and `levqor scheduler` until SIGTERM; `levqor jobs …`, `levqor health …`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from sqlalchemy import text

from levqor import clikit, metrics
from levqor.config import Settings, load_settings
from levqor.connectors import netio
from levqor.jobs import queue, service
from levqor.jobs.worker import Worker
from levqor.logging import configure_logging
from levqor.runtime import Runtime, freeze_startup_objects, run_process_loop


def worker(
    context: typer.Context,
    concurrency: int = typer.Option(10, min=1, help="Jobs run at once by this process."),
    wake_stdin: bool = typer.Option(
        False, "--wake-stdin", help="Wake on each byte read from stdin; stop when it closes."
    ),
) -> None:
    """Run jobs. Start any number, on any hosts sharing the database; SIGTERM stops cleanly."""
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)

    async def work(runtime: Runtime, stop: asyncio.Event) -> None:
        worker = Worker(runtime, concurrency=concurrency)
        if wake_stdin:
            _wake_on_stdin(worker.wake, stop)
        await worker.run(stop)

    run_process_loop(_until_signalled(context, settings, work))


def _wake_on_stdin(wake: asyncio.Event, stop: asyncio.Event) -> None:
    """`levqor up` writes a byte to its worker processes when it queues a run; its exit
    closes their stdin, and they stop rather than outlive it."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            got = os.read(fd, 4096)
        except BlockingIOError:
            return
        if got:
            wake.set()
        else:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)


async def _until_signalled(
    context: typer.Context,
    settings: Settings,
    start: Callable[[Runtime, asyncio.Event], Coroutine[Any, Any, None]],
) -> None:
    """Run a loop with its own runtime until SIGINT or SIGTERM asks it to stop."""
    if settings.prometheus_multiproc_dir is None:
        # No /metrics here, and no files shared with a process that answers one: nothing
        # could read what this process counts (5% of a worker's CPU per job).
        metrics.silence()
    netio.declare_asyncio()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with clikit.open_runtime(context, settings) as runtime:
        freeze_startup_objects()
        await start(runtime, stop)


def scheduler(context: typer.Context) -> None:
    """Fire cron schedules and run upkeep. Several may run: each fire time fires once."""
    from levqor.jobs.scheduler import Scheduler  # a worker, which loads this module, never needs it

    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    run_process_loop(
        _until_signalled(context, settings, lambda runtime, stop: Scheduler(runtime).run(stop))
    )


jobs_app = typer.Typer(help="The job queue.", no_args_is_help=True)


@jobs_app.command("replay")
def replay(
    context: typer.Context,
    workflow: str = typer.Option(None, help="Only this workflow's failed jobs."),
    since: datetime = typer.Option(None, help="Only jobs that failed at or after this time (UTC)."),
    user: str = typer.Option(None, help="Only this user's (id) failed jobs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Put failed jobs (the dead-letter queue) back in the queue; they resume from their
    last checkpoint."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    replayed = asyncio.run(_replay(context, workflow, since, user))
    if as_json:
        typer.echo(json.dumps({"replayed": replayed}))
        return
    # Here, not at the top: `levqor worker` and `levqor scheduler` load this module and
    # never print a table (rich is 20 ms of their start).
    from rich.console import Console
    from rich.table import Table

    table = Table("replayed job")
    for job_id in replayed:
        table.add_row(job_id)
    Console().print(table)
    Console().print(f"{len(replayed)} job(s) queued again.")


async def _replay(
    context: typer.Context, workflow: str | None, since: datetime | None, user: str | None
) -> list[str]:
    async with (
        clikit.open_runtime(context) as runtime,
        runtime.db.session(write=True) as session,
        session.begin(),
    ):
        return await service.replay_failed(session, workflow_id=workflow, since=since, user_id=user)


health_app = typer.Typer(
    help="Liveness checks for process supervisors (exit 0 healthy, 1 not).",
    no_args_is_help=True,
)


@health_app.command("worker")
def worker_health(context: typer.Context) -> None:
    """Healthy when a worker on this host beat within three heartbeats (the container
    or machine checks its own worker through the table every worker beats into)."""
    settings = load_settings()
    beat = asyncio.run(_last_beat(context, socket.gethostname()))
    limit = timedelta(seconds=settings.worker_heartbeat_s * 3)
    if beat is None or datetime.now(UTC) - beat > limit:
        typer.echo(f"no worker on this host beat within {limit.total_seconds():g} s", err=True)
        raise typer.Exit(1)
    typer.echo(f"worker alive (last beat {beat.isoformat()})")


@health_app.command("database")
def database_health(context: typer.Context) -> None:
    """Healthy when the database answers (the scheduler's check)."""
    try:
        asyncio.run(_ping(context))
    except Exception as exc:
        typer.echo(f"the database does not answer: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("database answers")


async def _last_beat(context: typer.Context, host: str) -> datetime | None:
    async with clikit.open_runtime(context) as runtime, runtime.db.session(write=False) as session:
        return await queue.last_beat(session, host=host)


async def _ping(context: typer.Context) -> None:
    async with clikit.open_runtime(context) as runtime, runtime.db.session(write=False) as session:
        await session.execute(text("SELECT 1"))
