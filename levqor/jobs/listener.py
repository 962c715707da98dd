"""LISTEN for new jobs on PostgreSQL, so an idle worker starts a run at once.

Polling stays as the fallback: if the listening connection cannot be opened or drops,
the worker logs it, keeps polling, and tries to listen again a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from levqor.jobs.queue import CHANNEL
from levqor.logging import get_logger

log = get_logger("levqor.listener")
RECONNECT_S = 5.0


def plain_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def listen(
    sqlalchemy_url: str, wake: asyncio.Event, stop: asyncio.Event, listening: asyncio.Event
) -> None:
    """Set `wake` on every notification until `stop`; reconnect when the link drops.
    `listening` is set while a LISTEN is in place."""
    import asyncpg  # PostgreSQL only: `levqor up` on SQLite never loads it

    while not stop.is_set():
        try:
            await _listen_once(plain_dsn(sqlalchemy_url), wake, stop, listening)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_failed", error=f"{type(exc).__name__}: {exc}", fallback="poll")
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=RECONNECT_S)


async def _listen_once(
    dsn: str, wake: asyncio.Event, stop: asyncio.Event, listening: asyncio.Event
) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    lost = asyncio.Event()
    try:
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, lambda *_args: wake.set())
        listening.set()
        log.info("listening", channel=CHANNEL)
        await _first_of(stop.wait(), lost.wait())
    finally:
        listening.clear()
        with contextlib.suppress(Exception):
            await connection.close(timeout=2)


async def _first_of(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
