"""FastAPI dependencies every router shares: the runtime, the request's session, and
the query parameters of a page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.audit import service as audit
from levqor.errors import LevqorError
from levqor.runtime import Runtime
from levqor.types import CURSOR_PATTERN

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Cursor = Annotated[
    str | None,
    Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the page before."),
]
Limit = Annotated[int, Query(ge=1, le=200, description="Items a page.")]


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs plain `def` dependencies in a thread pool.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent.

    Reads run in autocommit, and their session begins only if the route uses it (most
    GETs that authenticate and answer from the caller's row never do); other methods
    open a write transaction (BEGIN IMMEDIATE on SQLite). A LevqorError rolls back
    unless it says `keep_writes`.
    """
    write = request.method not in READ_METHODS
    key = runtime.settings.blind_index_key
    if key is not None and request.client is not None:
        audit.client.set((key.get_secret_value(), request.client.host))
    async with runtime.db.session(write=write) as session:
        if write:
            await session.begin()
        try:
            yield session
        except LevqorError as exc:
            if exc.keep_writes:
                await _commit(session)
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await _commit(session)


async def _commit(session: AsyncSession) -> None:
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """Autocommit reads, whatever the method: for a route that writes on its own terms
    (the webhook intake), so no transaction is held open across the request."""
    async with runtime.db.session(write=False) as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
