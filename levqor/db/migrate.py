"""Alembic, driven from code: `levqor migrate`, `levqor up` and the tests call these."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from levqor.config import Settings
from levqor.db.engine import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    _outside_event_loop(command.upgrade, alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    _outside_event_loop(command.downgrade, alembic_config(settings), revision)


def _outside_event_loop(function: Callable[..., None], *args: Any) -> None:
    """Run a migration command; in a helper thread when called under a running loop,
    because the Alembic environment drives the async engine with asyncio.run()."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        function(*args)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(function, *args).result()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config_for_scripts()).get_current_head()


def alembic_config_for_scripts() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def current_revision(settings: Settings) -> str | None:
    engine = make_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current_revision_sync(settings: Settings) -> str | None:
    return asyncio.run(current_revision(settings))
