"""E-mail addresses and names are encrypted at rest; logins still find accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from levqor.config import Settings
from levqor.runtime import Runtime
from tests.conftest import PASSWORD
from tests.factories import sqlite_files

NAME = "Ada Augusta Lovelace"


async def raw_database_text(runtime: Runtime, settings: Settings) -> bytes:
    if runtime.db.is_sqlite:
        return await asyncio.to_thread(sqlite_files, Path(settings.data_dir))
    async with runtime.db.read() as session:
        rows = await session.execute(text("SELECT row_to_json(u)::text FROM users u"))
    return "\n".join(row[0] for row in rows).encode()


async def test_the_database_holds_no_address_or_name_in_clear(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, settings: Settings
) -> None:
    account = await signup(email="Ada.Lovelace@Example.org", name=NAME)
    raw = await raw_database_text(runtime, settings)
    assert account.id.encode() in raw  # we are reading the right rows
    assert b"ada.lovelace@example.org" not in raw.lower()
    assert NAME.encode() not in raw
    login = await client.post(
        "/api/v1/auth/login", json={"email": "ADA.LOVELACE@example.org", "password": PASSWORD}
    )
    assert login.status_code == 200
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["email"] == "ada.lovelace@example.org"
    assert me["name"] == NAME
    again = await client.post(
        "/api/v1/auth/signup", json={"email": "ada.lovelace@EXAMPLE.org", "password": PASSWORD}
    )
    assert again.status_code == 409  # still one account per address, without decrypting
