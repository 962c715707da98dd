"""Re-encrypt every sealed column under the key ring's first key, online.

Columns are found by their `ENCRYPTED` marker, so a new one is covered without touching
this file. Rows are rewritten in small batches, each its own transaction, with a
compare-and-set on the old value: a row changed meanwhile (a secret rotated through the
API) is left as its writer left it, already under the new key. Processes keep working
throughout: every key in the ring still decrypts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy import Column, Table, Text, func, select, type_coerce, update

from levqor.db.engine import Database
from levqor.db.models import metadata

BATCH = 200


@dataclass(frozen=True)
class SealedColumn:
    table: Table
    column: Column[str]

    @property
    def raw(self) -> Any:
        """The stored token, not the clear text a `Sealed` column type would give."""
        return type_coerce(self.column, Text)

    @property
    def key(self) -> Column[object]:
        [primary] = self.table.primary_key.columns
        return primary

    def __str__(self) -> str:
        return f"{self.table.name}.{self.column.name}"


def sealed_columns() -> list[SealedColumn]:
    return [
        SealedColumn(table, column)
        for table in metadata.sorted_tables
        for column in table.columns
        if column.info.get("encrypted")
    ]


async def count_sealed(db: Database) -> int:
    total = 0
    async with db.session(write=False) as session:
        for sealed in sealed_columns():
            total += int(
                await session.scalar(
                    select(func.count()).where(sealed.column.is_not(None)).select_from(sealed.table)
                )
                or 0
            )
    return total


async def rotate_all(
    db: Database, cipher: MultiFernet, progress: Callable[[int], None] = lambda _: None
) -> int:
    """Re-encrypt every sealed value with `cipher`'s first key; the number rewritten."""
    rewritten = 0
    for sealed in sealed_columns():
        after: object = None
        while True:
            query = select(sealed.key, sealed.raw).where(sealed.column.is_not(None))
            if after is not None:
                query = query.where(sealed.key > after)
            async with db.session(write=False) as session:
                rows = (await session.execute(query.order_by(sealed.key).limit(BATCH))).all()
            if not rows:
                break
            async with db.transaction() as connection:
                for key, token in rows:
                    fresh = cipher.rotate(token.encode()).decode()
                    await connection.execute(
                        update(sealed.table)
                        .where(sealed.key == key, sealed.raw == token)
                        .values({sealed.column.name: type_coerce(fresh, Text)})
                    )
            rewritten += len(rows)
            progress(len(rows))
            after = rows[-1][0]
    return rewritten
