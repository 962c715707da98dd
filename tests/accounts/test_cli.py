"""`levqor create-admin` and `levqor tokens prune`, run as an operator would."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from levqor.accounts.models import LoginFailure, RefreshToken, TokenFamily, User
from levqor.bootstrap import build_runtime
from levqor.cli import app
from levqor.config import Settings
from levqor.db import migrate
from levqor.db.base import utcnow

runner = CliRunner()


def _query(settings: Settings, statement: Any) -> Any:
    async def run() -> Any:
        runtime = build_runtime(settings)
        async with runtime.db.read() as session:
            value = (await session.execute(statement)).all()
        await runtime.close()
        return value

    return asyncio.run(run())


def test_create_admin_with_generated_password(cli_env: Settings) -> None:
    result = runner.invoke(app, ["create-admin", "--email", "Boss@Example.com"])
    assert result.exit_code == 0, result.output
    assert "Password (shown once)" in result.output
    rows = _query(cli_env, select(User.email, User.role))
    assert rows == [("boss@example.com", "admin")]


def test_create_admin_twice_fails_clearly(cli_env: Settings) -> None:
    runner.invoke(app, ["create-admin", "--email", "a@example.com", "--password", "p" * 12])
    again = runner.invoke(app, ["create-admin", "--email", "a@example.com", "--password", "p" * 12])
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_tokens_prune_deletes_only_what_expired(cli_env: Settings) -> None:
    async def seed() -> None:
        runtime = build_runtime(cli_env)
        async with runtime.db.write() as session, session.begin():
            user = User(email="p@example.com", email_index="p", password_hash="x", credits=0)
            session.add(user)
            await session.flush()
            old = TokenFamily(user_id=user.id, expires_at=utcnow() - timedelta(days=1))
            live = TokenFamily(user_id=user.id, expires_at=utcnow() + timedelta(days=1))
            session.add_all([old, live])
            await session.flush()
            session.add_all(
                [
                    RefreshToken(
                        family_id=old.id,
                        token_hash="a" * 64,
                        expires_at=utcnow() - timedelta(days=1),
                    ),
                    RefreshToken(
                        family_id=live.id,
                        token_hash="b" * 64,
                        expires_at=utcnow() + timedelta(days=1),
                    ),
                    LoginFailure(account_key="k", failed_at=utcnow() - timedelta(hours=1)),
                    LoginFailure(account_key="k", failed_at=utcnow()),
                ]
            )
        await runtime.close()

    asyncio.run(seed())
    result = runner.invoke(app, ["tokens", "prune", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["refresh_tokens"] == 1
    assert counts["token_families"] == 1
    assert counts["login_failures"] == 1
    assert _query(cli_env, select(func.count()).select_from(RefreshToken)) == [(1,)]
    assert _query(cli_env, select(func.count()).select_from(LoginFailure)) == [(1,)]


def test_migrate_command_reports_the_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEVQOR_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert f"Database at {migrate.head_revision()}" in result.output
