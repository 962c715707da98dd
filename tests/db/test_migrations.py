"""Migrations upgrade and downgrade cleanly, and match the models, on both backends."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from levqor.config import Settings
from levqor.db import migrate
from levqor.db.models import metadata
from tests.conftest import TEST_DATABASE_URL, _settings


def sqlite_settings(tmp_path: Path) -> Settings:
    return _settings(data_dir=tmp_path)


@pytest.fixture
def scratch_postgres(tmp_path: Path) -> Iterator[Settings]:
    """A database of its own, so downgrading cannot disturb the other tests."""
    if TEST_DATABASE_URL is None:
        pytest.skip("LEVQOR_TEST_DATABASE_URL not set")
    name = f"levqor_migrations_{uuid.uuid4().hex[:8]}"
    admin_url = Settings(database_url=TEST_DATABASE_URL, _env_file=None).sqlalchemy_url
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    yield _settings(data_dir=tmp_path, database_url=f"{base}/{name}")
    asyncio.run(_admin(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


async def _tables(settings: Settings) -> set[str]:
    engine = create_async_engine(settings.sqlalchemy_url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


def _without_expression_indexes(obj: Any, name: str | None, kind: str, *_: Any) -> bool:
    """Alembic cannot compare an index on an expression (`priority DESC`); those are
    checked by name and predicate in `_index_definitions` instead."""
    return not (kind == "index" and name in EXPRESSION_INDEXES)


EXPRESSION_INDEXES = {"ix_jobs_waiting", "ix_jobs_user_waiting"}


async def _differences(settings: Settings) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": _without_expression_indexes},
        )
        return list(compare_metadata(context, metadata))

    engine = create_async_engine(settings.sqlalchemy_url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(compare)
    await engine.dispose()
    return diff


async def _index_definitions(settings: Settings) -> dict[str, str]:
    """The SQL each expression index was created with, as the database reports it."""
    sqlite = settings.sqlalchemy_url.startswith("sqlite")
    query = (
        "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
        if sqlite
        else "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
    )
    engine = create_async_engine(settings.sqlalchemy_url)
    async with engine.connect() as connection:
        rows = (await connection.execute(text(query))).all()
    await engine.dispose()
    return {name: sql for name, sql in rows if name in EXPRESSION_INDEXES}


def check_round_trip(settings: Settings) -> None:
    migrate.upgrade(settings)
    assert asyncio.run(_tables(settings)) == set(metadata.tables)
    assert asyncio.run(_differences(settings)) == []
    waiting = asyncio.run(_index_definitions(settings))["ix_jobs_waiting"]
    assert "priority DESC" in waiting
    assert "'queued'" in waiting
    assert "'retrying'" in waiting
    by_user = asyncio.run(_index_definitions(settings))["ix_jobs_user_waiting"]
    assert "user_id, priority DESC" in by_user
    assert "'retrying'" in by_user
    assert migrate.current_revision_sync(settings) == migrate.head_revision()

    migrate.downgrade(settings, "base")
    assert asyncio.run(_tables(settings)) == set()
    assert migrate.current_revision_sync(settings) is None

    migrate.upgrade(settings)
    assert migrate.current_revision_sync(settings) == migrate.head_revision()


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    check_round_trip(sqlite_settings(tmp_path))


def test_postgres_upgrade_downgrade_upgrade(scratch_postgres: Settings) -> None:
    check_round_trip(scratch_postgres)


def test_every_model_table_is_created_by_a_migration(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    migrate.upgrade(settings)
    assert asyncio.run(_differences(settings)) == []


async def test_app_refuses_to_start_on_an_old_schema(tmp_path: Path) -> None:
    from levqor.app import create_app

    app = create_app(sqlite_settings(tmp_path))
    with pytest.raises(RuntimeError, match="levqor migrate"):
        async with app.router.lifespan_context(app):
            pass
    await app.state.runtime.close()


async def test_app_starts_on_a_migrated_schema(tmp_path: Path) -> None:
    from levqor.app import create_app

    settings = sqlite_settings(tmp_path)
    migrate.upgrade(settings)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            pass
    finally:
        gc.unfreeze()  # the app froze this test process's objects, as `serve` does its own


def test_security_events_move_into_the_audit_chain(tmp_path: Path) -> None:
    from levqor.audit import service as audit
    from levqor.bootstrap import build_runtime

    settings = sqlite_settings(tmp_path)
    migrate.upgrade(settings, "0009")
    asyncio.run(
        _admin(
            settings.sqlalchemy_url,
            "INSERT INTO users (id, email, password_hash, role, plan, credits, is_active,"
            " created_at, updated_at) VALUES ('usr_a', 'a@example.com', 'x', 'user', 'free',"
            " 0, 1, '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')",
        )
    )
    asyncio.run(
        _admin(
            settings.sqlalchemy_url,
            "INSERT INTO security_events (id, user_id, kind, detail, created_at) VALUES"
            " ('sev_1', 'usr_a', 'signup', '{}', '2026-01-01 10:00:00.000001'),"
            " ('sev_2', 'usr_a', 'login', '{}', '2026-01-02 09:30:00.500000')",
        )
    )
    migrate.upgrade(settings)

    async def chain() -> tuple[list[str], audit.Verdict]:
        runtime = build_runtime(settings)
        async with runtime.db.read() as session:
            actions = [entry.action for entry in reversed(await audit.search(session))]
            verdict = await audit.verify(session)
        await runtime.close()
        return actions, verdict

    actions, verdict = asyncio.run(chain())
    assert actions == ["signup", "login"]
    assert verdict.intact
    assert verdict.checked == 2


def test_existing_addresses_and_names_are_sealed_by_the_migration(tmp_path: Path) -> None:
    from sqlalchemy import select

    from levqor.accounts import service as accounts
    from levqor.accounts.models import User
    from levqor.bootstrap import build_runtime

    settings = sqlite_settings(tmp_path)
    migrate.upgrade(settings, "0011")
    asyncio.run(
        _admin(
            settings.sqlalchemy_url,
            "INSERT INTO users (id, email, name, password_hash, role, plan, credits, is_active,"
            " created_at, updated_at) VALUES ('usr_a', 'old@example.com', 'Old Timer', 'x',"
            " 'user', 'free', 0, 1, '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')",
        )
    )
    migrate.upgrade(settings)

    async def read_back() -> tuple[str, str | None, str, Any]:
        runtime = build_runtime(settings)
        async with runtime.db.read() as session:
            raw = (await session.execute(text("SELECT email_encrypted FROM users"))).scalar_one()
            user = await accounts.find_by_email(session, kit=runtime.auth, email="OLD@example.com")
            found = await session.scalar(select(User.email))
        await runtime.close()
        assert user is not None
        return user.email, user.name, raw, found

    email, name, raw, found = asyncio.run(read_back())
    assert (email, name, found) == ("old@example.com", "Old Timer", "old@example.com")
    assert "old@example.com" not in raw
