"""The audit log: security events land in a hash chain that `levqor audit verify` checks,
and that admins (only) can read."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import httpx
from sqlalchemy import text, update
from typer.testing import CliRunner

from levqor.accounts.models import ROLE_ADMIN, User
from levqor.audit import service as audit
from levqor.cli import app as cli_app
from levqor.config import Settings
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, assert_problem


async def some_history(client: httpx.AsyncClient, signup: Any) -> Any:
    account = await signup()
    await client.post("/api/v1/auth/login", json={"email": account.email, "password": "wrong"})
    await client.post("/api/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    await client.post("/api/v1/api-keys", headers=account.headers, json={"name": "ci"})
    return account


async def test_security_events_form_an_unbroken_chain(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await some_history(client, signup)
    async with runtime.db.read() as session:
        entries = list(reversed(await audit.search(session, limit=100)))
        verdict = await audit.verify(session)
    assert [entry.action for entry in entries] == [
        "signup",
        "login_failed",
        "login",
        "api_key_created",
    ]
    assert {entry.actor for entry in entries} == {account.id}
    key = runtime.settings.blind_index_key
    assert key is not None
    # From where: the keyed hash of the caller's address, never the address itself
    # (the `signup` fixture signs each person up from an address of their own).
    assert {entry.ip_hash for entry in entries[1:]} == {
        audit.hash_ip(key.get_secret_value(), "127.0.0.1")
    }
    assert entries[0].ip_hash is not None
    assert len(entries[0].ip_hash) == 64
    assert entries[0].prev_hash == audit.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(entries))
    assert verdict.intact
    assert verdict.checked == 4


async def test_editing_one_row_is_caught_and_named(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, cli_env: Settings
) -> None:
    await some_history(client, signup)
    runner = CliRunner()
    clean = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify"])
    assert clean.exit_code == 0, clean.output
    assert "intact: 4 entries" in clean.output
    async with runtime.db.write() as session, session.begin():
        victim = (await audit.search(session, action="login_failed"))[0].id
        await session.execute(
            text("UPDATE audit_log SET action = 'login' WHERE id = :id"), {"id": victim}
        )
    broken = await asyncio.to_thread(runner.invoke, cli_app, ["audit", "verify", "--json"])
    assert broken.exit_code == 1
    assert f'"first_bad_id": {victim}' in broken.output
    assert "does not match its hash" in broken.output


async def test_deleting_a_row_breaks_the_link_after_it(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    await some_history(client, signup)
    async with runtime.db.write() as session, session.begin():
        entries = list(reversed(await audit.search(session)))
        await session.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entries[1].id})
        verdict = await audit.verify(session)
    assert verdict.first_bad_id == entries[2].id
    assert verdict.reason == "it does not link to the row before it"


async def test_admins_read_the_log_with_filters_and_others_may_not(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await some_history(client, signup)
    admin = await signup()
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(User).where(User.id == admin.id).values(role=ROLE_ADMIN))
    refused = await client.get("/api/v1/admin/audit", headers=account.headers)
    assert_problem(refused, 403, "forbidden")
    answer = await client.get(
        "/api/v1/admin/audit",
        headers=admin.headers,
        params={"actor": account.id, "action": "login"},
    )
    assert answer.status_code == 200
    [entry] = answer.json()["data"]
    assert entry["action"] == "login"
    assert entry["actor"] == account.id
    assert len(entry["hash"]) == 64


async def test_the_audit_log_pages_newest_first(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    admin = await signup()
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(User).where(User.id == admin.id).values(role=ROLE_ADMIN))
    for _ in range(5):
        await client.post("/api/v1/auth/login", json={"email": admin.email, "password": "no"})
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"action": "login_failed", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (
            await client.get("/api/v1/admin/audit", headers=admin.headers, params=params)
        ).json()
        seen += [entry["id"] for entry in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)
