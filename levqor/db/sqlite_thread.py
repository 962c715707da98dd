"""A worker's whole SQLite write, BEGIN to COMMIT, in one hop to the driver's thread.

aiosqlite runs every call on its connection's own thread. A worker's batch (the rows it
still holds, its checkpoints, its states, its next claim, with BEGIN and COMMIT) is six
to eight statements; through SQLAlchemy each is a hop (four with SQLAlchemy's own
aiosqlite adapter; see `db.sqlite_driver`) plus SQLAlchemy's execution path, which cost
a worker more CPU than SQLite's work. `write_in_one_hop` runs a plain function with the
`sqlite3` connection on that thread instead, in a transaction it begins and ends there;
`Compiled` gives the function SQLAlchemy's SQL and SQLAlchemy's own encoding of each
value (dates, JSON), so the rows read and written are the same as through the ORM.

aiosqlite has no public call for this; SQLAlchemy's own adapter queues functions on the
connection's thread the same way (`aiosqlite.Connection._execute`), and every SQLite
test run goes through this path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
Processor = Callable[[Any], Any] | None


async def run_on_driver_thread(
    connection: AsyncConnection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """`work(sqlite3_connection)`, on the thread that owns the connection behind
    `connection`, in its current transaction. SQLite's errors come out as SQLAlchemy's
    (`OperationalError`, `IntegrityError`, ...), as from any other statement."""
    raw = await connection.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    driver: Any = raw.driver_connection  # aiosqlite.Connection
    adapted.idle = False  # until known (see `db.sqlite_driver`): the pool then rolls back
    try:
        result, in_transaction = await driver._execute(_reporting, work, driver._conn)  # private
    except sqlite3.Error as exc:
        raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
    adapted.idle = not in_transaction
    return cast(T, result)


def _reporting(work: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> tuple[T, bool]:
    return work(db), db.in_transaction


class LockRetry:
    """The pauses between tries for SQLite's write lock while another process holds it:
    0.2 ms, doubling up to 2 ms, until `timeout_s` has passed since the first try. (The
    connection's own busy timeout is 0, see `db.engine`: SQLite's sleeps would hold the
    driver's thread, and its first one is a whole millisecond.)"""

    FIRST_S, MAX_S = 0.0002, 0.002

    def __init__(self, timeout_s: float) -> None:
        self._deadline = time.monotonic() + timeout_s
        self._delay = self.FIRST_S

    def pause(self) -> float | None:
        """How long to wait before the next try; None once out of time."""
        if time.monotonic() >= self._deadline:
            return None
        delay, self._delay = self._delay, min(self._delay * 2, self.MAX_S)
        return delay


def is_locked(exc: BaseException) -> bool:
    """SQLite refused because another connection holds the write lock."""
    return "database is locked" in str(exc)


_LOCKED = object()


async def write_in_one_hop(
    connection: AsyncConnection, work: Callable[[sqlite3.Connection], T], *, timeout_s: float
) -> T:
    """`work` in a write transaction of its own on `connection` (one outside any): BEGIN
    IMMEDIATE, `work`, COMMIT (ROLLBACK if it raises), in one hop; retried, while another
    process holds the write lock, as `LockRetry` says."""
    retry = LockRetry(timeout_s)
    while True:
        done = await run_on_driver_thread(connection, partial(_transaction, work))
        if done is not _LOCKED:
            return cast(T, done)
        pause = retry.pause()
        if pause is None:
            raise DBAPIError.instance(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError("database is locked"),
                sqlite3.Error,
            )
        await asyncio.sleep(pause)


def _transaction(work: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> Any:
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_locked(exc):
            return _LOCKED
        raise
    try:
        done = work(db)
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return done


class Compiled:
    """A statement compiled once for a dialect: its SQL with `?` placeholders, and how
    to turn named values into its parameters and its rows into Python values."""

    def __init__(self, statement: Any, dialect: Dialect, *, keys: Sequence[str] = ()) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) or None)
        self.sql = str(compiled)
        names = compiled.positiontup or []
        self.names: tuple[str, ...] = tuple(names)
        binds = [compiled.binds[name] for name in names]
        self.bind: tuple[Processor, ...] = tuple(
            bind.type.bind_processor(dialect) for bind in binds
        )
        # Values the statement fixed itself (`.values(lease_owner=None)`); the rest must be given.
        self.fixed = {
            name: bind.effective_value
            for name, bind in zip(names, binds, strict=True)
            if not bind.required
        }
        columns = getattr(statement, "selected_columns", None) or []
        self.result: tuple[Processor, ...] = tuple(
            column.type.result_processor(dialect, None) for column in columns
        )

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        given = self.fixed | dict(values) if self.fixed else values
        return tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(self.bind, (given[name] for name in self.names), strict=True)
        )

    def rows(self, cursor: sqlite3.Cursor) -> list[tuple[Any, ...]]:
        if not any(self.result):
            return cursor.fetchall()
        return [
            tuple(
                value if process is None or value is None else process(value)
                for process, value in zip(self.result, row, strict=True)
            )
            for row in cursor.fetchall()
        ]


class CompiledFor:
    """`Compiled` statements made on first use per dialect (each engine has its own)."""

    def __init__(self, make: Callable[[Dialect], T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[Dialect, Any] = weakref.WeakKeyDictionary()

    def __call__(self, dialect: Dialect) -> Any:
        made = self._made.get(dialect)
        if made is None:
            made = self._made[dialect] = self._make(dialect)
        return made
