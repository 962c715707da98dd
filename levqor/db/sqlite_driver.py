"""SQLAlchemy's aiosqlite adapter, with one hop to the driver's thread per statement.

aiosqlite runs each call on its connection's own thread. SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch the rows, close the cursor), and
each is a future, a wake-up of the event loop and two hand-overs of the GIL: on a busy
event loop (`levqor up`'s API), a write transaction held SQLite's write lock across
dozens of loop turns. This adapter's cursor does the four in one call, and keeps what
SQLAlchemy reads afterwards (description, rows, row count, last row id). And the pool's
rollback when a connection is handed back, one more hop per checkout, is skipped when
the connection is known to be outside any transaction (after a commit, a rollback, or a
statement that left none open).

Server-side cursors (`stream`) keep SQLAlchemy's own. The classes below extend
SQLAlchemy's adapter classes (`sqlalchemy.dialects.sqlite.aiosqlite`), not a public API:
every SQLite test runs through them, so a SQLAlchemy upgrade that changes them fails
there first.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

# description, rows, rowcount, lastrowid, and whether a transaction is open after it
Outcome = tuple[Any, list[Any], int, int | None, bool]


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no driver cursor: no hop
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        return None

    async def _async_soft_close(self) -> None:
        return None  # the driver's cursor was closed in the hop

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._one_hop(_execute, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._one_hop(_executemany, operation, seq_of_parameters)

    async def _one_hop(self, run: Any, operation: Any, parameters: Any) -> None:
        """`run` on the driver's thread, and what it saw kept for SQLAlchemy to read."""
        async with self._adapt_connection._execute_mutex:
            driver = self._connection
            done: Outcome = await driver._execute(run, driver._conn, operation, parameters)
            self._description, rows, self._rowcount, self._lastrowid, in_transaction = done
            self._rows = collections.deque(rows)
            connection: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
            connection.idle = not in_transaction


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("idle",)
    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.idle = True  # known to be outside any transaction: nothing to roll back

    def commit(self) -> None:
        super().commit()
        self.idle = True

    def rollback(self) -> None:
        if not self.idle:
            super().rollback()
            self.idle = True


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """Pass as `create_async_engine(..., module=OneHopDBAPI())` for a sqlite+aiosqlite URL."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def _execute(connection: sqlite3.Connection, operation: str, parameters: Any) -> Outcome:
    return _run(connection, operation, parameters, many=False)


def _executemany(connection: sqlite3.Connection, operation: str, parameters: Any) -> Outcome:
    return _run(connection, operation, parameters, many=True)


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, *, many: bool) -> Outcome:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return (
            cursor.description,
            rows,
            cursor.rowcount,
            cursor.lastrowid,
            connection.in_transaction,
        )
    finally:
        cursor.close()
