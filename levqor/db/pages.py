"""Keyset pages: newest first by (time, id), continued from a cursor, one query a page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from levqor import types


async def newest_first(
    session: AsyncSession,
    query: Select[Any],
    *,
    at: InstrumentedAttribute[Any],
    key: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """A page of `query`'s rows and the cursor of the next (None on the last page).
    `cursor` has `types.CURSOR_PATTERN`'s shape (the API checks it)."""
    if cursor:
        last_at, last_key = types.decode_cursor(cursor)
        typed_key = int(last_key) if last_key.isdigit() else last_key
        query = query.where(or_(at < last_at, and_(at == last_at, key < typed_key)))
    rows = list(await session.scalars(query.order_by(at.desc(), key.desc()).limit(limit + 1)))
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    last = page[-1]
    return page, types.encode_cursor(getattr(last, at.key), str(getattr(last, key.key)))
