"""`levqor users role`: an operator promotes and demotes; each change is audited and
takes effect on the user's next request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from typer.testing import CliRunner

from levqor.audit import service as audit
from levqor.cli import app as cli_app
from levqor.runtime import Runtime
from tests.conftest import assert_problem

runner = CliRunner()


async def levqor(*args: str) -> Any:
    return await asyncio.to_thread(runner.invoke, cli_app, list(args))


async def test_a_role_change_is_audited_and_effective_at_once(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, cli_env: Any
) -> None:
    account = await signup()
    assert_problem(
        await client.get("/api/v1/admin/audit", headers=account.headers), 403, "forbidden"
    )
    promoted = await levqor("users", "role", account.email.upper(), "admin")
    assert promoted.exit_code == 0, promoted.output
    assert "is now admin" in promoted.output
    log = await client.get(
        "/api/v1/admin/audit", headers=account.headers, params={"action": "role_changed"}
    )
    assert log.status_code == 200  # the same token, no new login
    [entry] = log.json()["data"]
    assert entry["object_id"] == account.id
    assert entry["actor"] == "system"
    assert entry["detail"] == {"from": "user", "to": "admin"}

    again = await levqor("users", "role", account.email, "admin")
    assert "was admin already" in again.output
    demoted = await levqor("users", "role", account.email, "user")
    assert demoted.exit_code == 0, demoted.output
    assert_problem(
        await client.get("/api/v1/admin/audit", headers=account.headers), 403, "forbidden"
    )
    async with runtime.db.read() as session:
        changes = await audit.search(session, action="role_changed")
        verdict = await audit.verify(session)
    assert [change.detail["to"] for change in changes] == ["user", "admin"]  # newest first
    assert verdict.intact


async def test_an_unknown_role_or_user_changes_nothing(
    client: httpx.AsyncClient, signup: Any, cli_env: Any
) -> None:
    account = await signup()
    wrong_role = await levqor("users", "role", account.email, "owner")
    assert wrong_role.exit_code == 1
    assert "No such role" in wrong_role.output
    nobody = await levqor("users", "role", "nobody@example.com", "admin")
    assert nobody.exit_code == 1
    assert "No user with the address" in nobody.output
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["role"] == "user"
