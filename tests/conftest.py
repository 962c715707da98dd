"""Shared fixtures.

Backends come from the environment: `LEVQOR_TEST_DATABASE_URL` (PostgreSQL) and
`LEVQOR_TEST_REDIS_URL`; without them the suite runs on SQLite with in-memory limits.
Every test gets fresh state: SQLite copies a migrated template file, PostgreSQL is
migrated once and truncated before each test, Redis keys get a per-test prefix.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from levqor.app import create_app
from levqor.bootstrap import build_runtime
from levqor.config import Settings, with_generated_secrets
from levqor.db import migrate
from levqor.db.models import metadata
from levqor.runtime import Runtime

TEST_DATABASE_URL = os.environ.get("LEVQOR_TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("LEVQOR_TEST_REDIS_URL")
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LEVQOR_* setting from the shell may leak into a test."""
    for name in list(os.environ):
        if name.startswith("LEVQOR_") and not name.startswith("LEVQOR_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("template")
    migrate.upgrade(_settings(data_dir=directory))
    return directory / "levqor.db"


@pytest.fixture(scope="session")
def postgres_migrated(tmp_path_factory: pytest.TempPathFactory) -> bool:
    if TEST_DATABASE_URL is None:
        return False
    data_dir = tmp_path_factory.mktemp("postgres")
    migrate.upgrade(_settings(data_dir=data_dir, database_url=TEST_DATABASE_URL))
    return True


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": "test-" + "x" * 40,
        "encryption_keys": [Fernet.generate_key().decode()],
        "access_log": False,
        "_env_file": None,
    }
    values.update(overrides)
    return with_generated_secrets(Settings(**values))


@pytest.fixture
def make_settings(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Settings for this test's fresh database; keyword overrides win."""
    prefix = f"levqor-test:{uuid.uuid4().hex}:"
    key = Fernet.generate_key().decode()  # one database, one key ring, as in production

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "encryption_keys": [key],
            "data_dir": tmp_path / "data",
            "redis_url": TEST_REDIS_URL,
            "redis_key_prefix": prefix,
            # The local peers the tests start listen here; everything else stays refused.
            "allow_private_urls": ["127.0.0.1/32"],
            # The backup tests take theirs; elsewhere a scheduler tick should not.
            "backups_enabled": False,
        }
        if TEST_DATABASE_URL:
            values["database_url"] = TEST_DATABASE_URL
        values.update(overrides)
        return _settings(**values)

    return build


@pytest.fixture
async def fresh_database(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if TEST_DATABASE_URL:
        request.getfixturevalue("postgres_migrated")
        await _truncate_postgres(TEST_DATABASE_URL)
    else:
        template: Path = request.getfixturevalue("sqlite_template")
        (tmp_path / "data").mkdir(exist_ok=True)
        shutil.copy(template, tmp_path / "data" / "levqor.db")


async def _truncate_postgres(url: str) -> None:
    engine = create_async_engine(Settings(database_url=url, _env_file=None).sqlalchemy_url)
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
def settings(make_settings: Any, fresh_database: None) -> Settings:
    built: Settings = make_settings()
    return built


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    built = build_runtime(settings)
    yield built
    await built.close()


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> FastAPI:
    return create_app(settings, runtime)


@asynccontextmanager
async def serve_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """An app of its own (other settings, or a second API process) and a client for it."""
    runtime = build_runtime(settings)
    try:
        async with client_for(create_app(settings, runtime)) as http:
            yield http, runtime
    finally:
        await runtime.close()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


class Account:
    """A signed-up user as a test sees it."""

    def __init__(self, email: str, body: dict[str, Any]) -> None:
        self.email = email
        self.password = PASSWORD
        self.id: str = body["user"]["id"]
        self.access_token: str = body["access_token"]
        self.refresh_token: str = body["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


SIGNUP_ADDRESSES = itertools.count(2)


@pytest.fixture
def signup(client: httpx.AsyncClient, app: FastAPI) -> Any:
    """Sign a person up, each from an address of their own (a loopback one: the ASGI
    transport sends nothing), with the test client's cookies: people signing up through a
    partner's link are not the partner, and the fraud guard would say so."""

    async def make(email: str | None = None, **extra: Any) -> Account:
        address = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        n = next(SIGNUP_ADDRESSES)
        own = httpx.ASGITransport(app=app, client=(f"127.1.{n // 250 % 250}.{n % 250 + 1}", 123))
        async with httpx.AsyncClient(
            transport=own, base_url=client.base_url, cookies=client.cookies
        ) as person:
            response = await person.post(
                "/api/v1/auth/signup", json={"email": address, "password": PASSWORD, **extra}
            )
        assert response.status_code == 201, response.text
        return Account(address, response.json())

    return make


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert {"type", "title", "detail"} <= body.keys()
    return body


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A private redis-server on a free loopback port, which a test may stop and restart."""
    from tests.peers import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http_peer() -> Iterator[Any]:
    from tests.peers import HttpPeer

    peer = HttpPeer()
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture
def hostile_peer() -> Iterator[Any]:
    from tests.peers import HostileHttpPeer

    peer = HostileHttpPeer()
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment a `levqor` command needs to reach this test's database."""
    monkeypatch.setenv("LEVQOR_DATA_DIR", str(settings.data_dir))
    assert settings.jwt_secret is not None
    monkeypatch.setenv("LEVQOR_JWT_SECRET", settings.jwt_secret.get_secret_value())
    monkeypatch.setenv("LEVQOR_ENCRYPTION_KEYS", settings.encryption_keys[0].get_secret_value())
    if settings.database_url:
        monkeypatch.setenv("LEVQOR_DATABASE_URL", settings.database_url)
    return settings


@pytest.fixture
def smtp_peer() -> Iterator[Any]:
    from tests.peers import SmtpPeer

    peer = SmtpPeer()
    peer.start()
    yield peer
    peer.stop()
