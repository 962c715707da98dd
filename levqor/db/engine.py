"""Engines and session factories.

- `read` sessions run on their own pool, in autocommit from connect on: each statement is
  its own snapshot and no BEGIN/COMMIT round trips are spent, so a GET that loads the
  caller's user costs one round trip, not three. (Switching a pooled connection's
  isolation per checkout would spend the round trips autocommit is meant to save.)
- `write` sessions open a real transaction (on PostgreSQL with generic plans only, see
  `make_engine`); on SQLite `BEGIN IMMEDIATE`, because a deferred
  SQLite transaction that reads and then writes fails with SQLITE_BUSY (not a wait) when
  another writer committed in between; taking the write lock up front makes writers queue.

On SQLite, one write transaction at a time per process holds the database's write lock;
the others wait on an asyncio lock. SQLite's own busy handler waits by sleeping in steps
of up to 100 ms, which turned contention between pooled connections into long tails, and
between processes (`levqor up`'s API and its worker process) into a throughput limit:
a writer of one process slept for tens of milliseconds while the other's transactions,
a fraction of a millisecond each, came and went. So a write transaction's BEGIN IMMEDIATE
does not use it: it is retried on the event loop every 0.2 to 2 ms until
`LEVQOR_SQLITE_BUSY_TIMEOUT_MS` runs out.

No pre-ping: it costs a round trip per checkout. A connection that died with the server
fails its request once, and SQLAlchemy then invalidates the whole pool. No overflow either:
overflow connections are opened and closed per use under load (a TCP and TLS handshake per
request); past `pool_size` busy connections a request waits for one instead, in line
(`fairpool`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
    suppress,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from levqor.config import Settings
from levqor.crypto import KeyRing, build_cipher
from levqor.db.base import bind_key_ring
from levqor.db.fairpool import FairAsyncPool
from levqor.db.sqlite_thread import LockRetry, is_locked, write_in_one_hop
from levqor.events import SESSION_KEY, Events

T = TypeVar("T")
IMMEDIATE = "levqor_sqlite_immediate"
AUTOCOMMIT = "levqor_autocommit"
BACKGROUND_GRACE_S = 5.0
POOL_RECYCLE_S = 1800  # a pooled connection is replaced after this long (`make_engine`)


@asynccontextmanager
async def autocommit_on(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection from `engine`'s pool on which each statement commits on its own."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


class KeptConnection:
    """One autocommit connection from the write pool, kept between uses instead of being
    checked out for each. A loaded worker's group commits follow one another without
    pause, and checking a connection out (its isolation level set, then reset on return)
    cost about as much of the worker's CPU as the statement it carried; an idle worker's
    claims, as much of their time. Uses take turns.
    A use that fails closes it, so a broken connection never serves twice; so does
    `Database.dispose`, and age, as the pool's recycling would."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._turn = asyncio.Lock()
        self._connection: AsyncConnection | None = None
        self._held = AsyncExitStack()  # gives `_connection` back
        self._opened_at = 0.0

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        async with self._turn:
            if self._connection is not None and self._aged():
                await self._close()
            if self._connection is None:
                self._connection = await self._open()
            try:
                yield self._connection
            except BaseException:
                with suppress(Exception):  # the use's own error is the one to raise
                    await self._close()
                raise

    async def close(self) -> None:
        async with self._turn:
            await self._close()

    @property
    def held(self) -> bool:
        return self._connection is not None

    def _aged(self) -> bool:
        return time.monotonic() - self._opened_at > POOL_RECYCLE_S

    async def _open(self) -> AsyncConnection:
        connection = await self._held.enter_async_context(autocommit_on(self._engine))
        self._opened_at = time.monotonic()
        return connection

    async def _close(self) -> None:
        self._connection = None
        await self._held.aclose()


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    read_engine: AsyncEngine
    read: async_sessionmaker[AsyncSession]
    write: async_sessionmaker[AsyncSession]
    key_ring: KeyRing
    events: Events
    kept: KeptConnection  # the job writer's (see `PostgresBackend.write_and_claim`)
    write_engine: AsyncEngine | None = None
    write_lock: asyncio.Lock | None = None
    busy_timeout_s: float = 5.0  # SQLite: how long a writer waits for the write lock
    background: set[asyncio.Task[None]] = field(default_factory=set, hash=False, compare=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on a bare connection, without an ORM session: the job
        queue's hot path, where a session's bookkeeping costs more than the SQL."""
        async with self._serialised(), (self.write_engine or self.engine).begin() as connection:
            yield connection

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection on which each statement commits on its own: a write that is one
        statement costs one round trip, and its row locks live only inside the server.
        From the write pool: a request holding a read connection must never wait for
        another read connection (a full pool would deadlock)."""
        async with autocommit_on(self.engine) as connection:
            yield connection

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A bare connection from the read pool, in autocommit: reads without a session."""
        async with self.read_engine.connect() as connection:
            yield connection

    async def sqlite_write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` with the SQLite connection, on its driver's thread, in a write
        transaction of its own begun and ended there too: the queue's hot path, one hop
        where the same statements through SQLAlchemy took about 25 (`db.sqlite_thread`)."""
        async with self._serialised(), self.engine.connect() as connection:
            return await write_in_one_hop(connection, work, timeout_s=self.busy_timeout_s)

    def one_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for one self-contained write statement: in autocommit on
        PostgreSQL (one round trip instead of BEGIN, statement, COMMIT), in a short
        serialised write transaction on SQLite."""
        return self.transaction() if self.is_sqlite else self.autocommit()

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """A session for reading (autocommit) or writing (serialised per process on SQLite)."""
        if not write:
            session = self.read()
            try:
                yield session
            finally:
                await _release(session)
        else:
            async with self._serialised(), self.write() as session:
                yield session

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Run the block alone among every process sharing the database: a session-level
        advisory lock held on its own connection on PostgreSQL (waits for the holder).
        On SQLite each write transaction is serial already; a block spanning several
        must make its steps safe to repeat."""
        if self.is_sqlite:
            yield
            return
        async with autocommit_on(self.engine) as connection:
            await connection.execute(text("SELECT pg_advisory_lock(hashtext(:n))"), {"n": name})
            try:
                yield
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": name}
                )

    def _serialised(self) -> AbstractAsyncContextManager[Any]:
        """On SQLite, one writer per process at a time (see the module's notes)."""
        return self.write_lock if self.write_lock is not None else nullcontext()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` on its own task; `dispose` lets it finish (for a few seconds at
        most) before closing the connections it uses."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def dispose(self) -> None:
        if self.background:
            await asyncio.wait(self.background, timeout=BACKGROUND_GRACE_S)
        await self.kept.close()
        await self.read_engine.dispose()
        await self.engine.dispose()


async def _release(session: AsyncSession) -> None:
    """End a read session; close it only if it holds something. AsyncSession's own exit
    spends a task and a greenlet hop (about 30 µs) even on a session never used, as most
    authenticated GETs' sessions are (their caller is loaded on a bare connection)."""
    if session.in_transaction() or session.identity_map or session.new:
        await session.close()


def create_database(
    settings: Settings, key_ring: KeyRing | None = None, events: Events | None = None
) -> Database:
    """The engines and sessions for `settings`; sealed columns use `key_ring` (by
    default the one the settings name), which travels with the engines' dialect, and
    the domain events published in its sessions reach `events`' subscribers."""
    key_ring = key_ring or build_cipher(settings)
    events = events or Events()
    info = {SESSION_KEY: events}
    engine = make_engine(settings)
    read_engine = make_engine(settings, autocommit=True)
    for each in (engine, read_engine):
        bind_key_ring(each.sync_engine.dialect, key_ring)
    write_engine = engine.execution_options(**{IMMEDIATE: True})
    return Database(
        engine=engine,
        read_engine=read_engine,
        key_ring=key_ring,
        events=events,
        read=async_sessionmaker(read_engine, expire_on_commit=False, info=info),
        write=async_sessionmaker(write_engine, expire_on_commit=False, info=info),
        write_engine=write_engine,
        kept=KeptConnection(engine),
        write_lock=asyncio.Lock() if engine.dialect.name == "sqlite" else None,
        busy_timeout_s=settings.sqlite_busy_timeout_ms / 1000,
    )


def make_engine(settings: Settings, *, autocommit: bool = False) -> AsyncEngine:
    url = settings.sqlalchemy_url
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": 0,
        "poolclass": FairAsyncPool,
    }
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
        options["execution_options"] = {AUTOCOMMIT: True}
        options["pool_reset_on_return"] = None  # nothing to roll back in autocommit
    if url.startswith("sqlite"):
        from levqor.db.sqlite_driver import OneHopDBAPI  # SQLite's only: loaded only for it

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, module=OneHopDBAPI(), **options)
        _configure_sqlite(
            engine,
            settings.sqlite_busy_timeout_ms,
            settings.sqlite_synchronous,
            writes=not autocommit,
        )
        return engine
    if not autocommit:
        # Writes find their rows by key, so their plans never depend on the values; yet
        # PostgreSQL re-planned the queue's prepared statements on each execution (a
        # fifth of its CPU per job). Reads keep per-value plans.
        options["connect_args"] = {"server_settings": {"plan_cache_mode": "force_generic_plan"}}
    return create_async_engine(url, pool_recycle=POOL_RECYCLE_S, **options)


def _configure_sqlite(
    engine: AsyncEngine, busy_timeout_ms: int, synchronous: str, *, writes: bool
) -> None:
    """`writes`: the engine of write transactions, whose BEGIN IMMEDIATE waits for the
    write lock on the event loop instead of in SQLite's busy handler."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (pysqlite's own transaction handling is off).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={0 if writes else int(busy_timeout_ms)}")
        # In WAL mode NORMAL syncs only at checkpoints: a power cut can undo the last
        # commits (a crash of the process cannot). FULL syncs the log at every commit.
        cursor.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        # 1 MiB of page cache per connection instead of 2: a pool of them under load
        # held tens of MiB of copies of pages the OS caches once anyway.
        cursor.execute("PRAGMA cache_size=-1024")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get(AUTOCOMMIT):
            return
        if options.get(IMMEDIATE):
            _begin_immediate(connection, busy_timeout_ms / 1000)
        else:
            connection.exec_driver_sql("BEGIN")


def _begin_immediate(connection: Any, timeout_s: float) -> None:
    """Take SQLite's write lock, retrying while another process holds it. Runs inside
    SQLAlchemy's greenlet, so the pauses are the event loop's (`await_only`)."""
    cursor = connection.connection.dbapi_connection.cursor()
    retry = LockRetry(timeout_s)
    try:
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except connection.dialect.dbapi.OperationalError as exc:
                if not is_locked(exc):
                    break
            pause = retry.pause()
            if pause is None:
                break
            await_only(asyncio.sleep(pause))
    finally:
        cursor.close()
    # Out of time, or another error: once more through SQLAlchemy, which raises its own.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def unavailable(exc: BaseException) -> bool:
    """The database cannot be reached (every statement would fail alike: the server is
    down, restarting, or the connection died), as opposed to one statement it refused."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return type(exc).__name__ in POSTGRES_UNAVAILABLE


# asyncpg's own errors when it is not wrapped by SQLAlchemy (at connect).
POSTGRES_UNAVAILABLE = frozenset(
    {"CannotConnectNowError", "ConnectionDoesNotExistError", "ConnectionFailureError"}
)
