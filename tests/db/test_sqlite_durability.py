"""SQLite's durability is a setting: FULL by default, so an accepted run survives a power
cut; NORMAL when an operator trades that for faster commits."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from levqor.bootstrap import build_runtime

SYNCHRONOUS = {1: "NORMAL", 2: "FULL"}  # what PRAGMA synchronous answers


@pytest.mark.parametrize(("configured", "expected"), [(None, "FULL"), ("NORMAL", "NORMAL")])
async def test_every_sqlite_connection_syncs_as_configured(
    make_settings: Any, fresh_database: None, configured: str | None, expected: str
) -> None:
    overrides = {} if configured is None else {"sqlite_synchronous": configured}
    settings = make_settings(**overrides)
    if not settings.is_sqlite:
        pytest.skip("SQLite only")
    runtime = build_runtime(settings)
    try:
        async with runtime.db.write() as session, session.begin():
            level = await session.scalar(text("PRAGMA synchronous"))
        async with runtime.db.read() as session:
            read_level = await session.scalar(text("PRAGMA synchronous"))
    finally:
        await runtime.close()
    assert SYNCHRONOUS[level] == expected
    assert SYNCHRONOUS[read_level] == expected


def test_only_full_or_normal_are_accepted(make_settings: Any) -> None:
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        make_settings(sqlite_synchronous="OFF")
