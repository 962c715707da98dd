"""Export and erasure: every personal table is classified, exported and erased."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from levqor.accounts import service as accounts
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.billing.models import CreditEntry
from levqor.compliance import registry
from levqor.compliance import service as compliance
from levqor.db.models import metadata
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, assert_problem
from tests.factories import SECRET, add_credential, make_workflow, start


def test_every_table_is_classified_for_export_and_erasure() -> None:
    unclassified = set(metadata.tables) - set(registry.TABLES)
    assert unclassified == set(), f"classify these in compliance/registry.py: {unclassified}"
    assert set(registry.TABLES) - set(metadata.tables) == set()  # no stale entries


async def a_full_account(client: httpx.AsyncClient, signup: Any, runtime: Runtime) -> Any:
    """A user with a row in as many personal tables as the API can reach."""
    account = await signup(marketing_consent=True)
    await add_credential(client, account)
    await client.post("/api/v1/api-keys", headers=account.headers, json={"name": "ci"})
    await client.get("/api/v1/callbacks/secret", headers=account.headers)
    workflow_id = await make_workflow(
        client, account, {"id": "shape", "connector": "transform", "params": {"n": 1}}
    )
    await start(client, account, workflow_id, {"email": "customer@example.org"})
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()
    return account


async def test_the_export_holds_every_personal_table_and_no_secret(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await a_full_account(client, signup, runtime)
    other = await signup()
    async with runtime.db.write() as session, session.begin():  # done to them, by the system
        user = await session.get(User, account.id)
        assert user is not None
        await accounts.set_role(session, user=user, role="admin", actor="system")
    answer = await client.get("/api/v1/me/export", headers=account.headers)
    assert answer.status_code == 200
    document = answer.json()
    about_them = [
        entry for entry in document["data"]["audit_log"] if entry["action"] == "role_changed"
    ]
    assert [entry["actor"] for entry in about_them] == ["system"]
    assert all(
        other.id not in (entry["actor"], entry["object_id"])
        for entry in document["data"]["audit_log"]
    )
    filled = {name for name, rows in document["data"].items() if rows}
    assert filled >= {
        "users",
        "api_keys",
        "token_families",
        "refresh_tokens",
        "workflows",
        "workflow_versions",
        "jobs",
        "job_steps",
        "credentials",
        "callback_secrets",
        "consents",
        "audit_log",
        "credit_ledger",
    }
    assert document["data"]["users"][0]["email"] == account.email
    assert document["data"]["jobs"][0]["input"] == {"email": "customer@example.org"}
    assert document["data"]["consents"][0]["granted"] is True
    assert {"purposes", "recipients", "retention", "rights"} <= document["about"].keys()
    assert SECRET not in answer.text
    assert "password_hash" not in answer.text
    assert "secret_encrypted" not in answer.text


async def test_erasure_needs_the_password_and_then_leaves_nothing_personal(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await a_full_account(client, signup, runtime)
    other = await signup()
    wrong = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": "not it"}
    )
    assert_problem(wrong, 403, "wrong_password")
    assert (await client.get("/api/v1/me", headers=account.headers)).status_code == 200

    gone = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": PASSWORD}
    )
    assert gone.status_code == 204
    me = await client.get("/api/v1/me", headers=account.headers)
    assert me.status_code == 401  # every token stops working at once
    relogin = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert relogin.status_code == 401
    async with runtime.db.read() as session:
        for name, rule in registry.TABLES.items():
            if isinstance(rule, registry.Owned) and rule.erase == "cascade":
                table = metadata.tables[name]
                left = await session.scalar(
                    select(func.count())
                    .select_from(table)
                    .where(table.c[rule.column] == account.id)
                )
                assert left == 0, name
        for name, rule in registry.TABLES.items():
            if isinstance(rule, registry.Via):  # nothing left pointing at erased rows
                child, parent = metadata.tables[name], metadata.tables[rule.parent]
                orphans = await session.scalar(
                    select(func.count())
                    .select_from(child)
                    .where(child.c[rule.column].not_in(select(parent.c[rule.parent_key])))
                )
                assert orphans == 0, name
        receipt = await audit.search(session, action="account_erased")
        kept_ledger = list(
            await session.scalars(
                select(CreditEntry.delta)
                .where(CreditEntry.user_id == receipt[0].detail["tombstone"])
                .order_by(CreditEntry.id)
            )
        )
        ledger_under_user_id = await session.scalar(
            select(func.count()).where(CreditEntry.user_id == account.id)
        )
        verdict = await audit.verify(session)
        key = runtime.settings.blind_index_key
        assert key is not None
        never_again = await compliance.is_suppressed(
            session, key=key.get_secret_value(), user_id=other.id, address=account.email
        )
    assert receipt[0].object_id == account.id
    tombstone = receipt[0].detail["tombstone"]
    assert tombstone.startswith("tomb_")
    assert kept_ledger == [50, -1]  # the money record stays, whole, under the tombstone
    assert ledger_under_user_id == 0
    assert verdict.intact  # the chain survives: erasure appends, it never rewrites
    assert never_again  # the erased address is on the global list, for every sender


async def test_the_operator_answers_requests_from_the_cli(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, cli_env: Any, tmp_path: Any
) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from levqor.cli import app as cli_app

    account = await signup()
    runner = CliRunner()
    target = tmp_path / "export.json"
    exported = await asyncio.to_thread(
        runner.invoke, cli_app, ["users", "export", account.email.upper(), "--output", str(target)]
    )
    assert exported.exit_code == 0, exported.output
    assert json.loads(target.read_text())["data"]["users"][0]["id"] == account.id
    deleted = await asyncio.to_thread(
        runner.invoke, cli_app, ["users", "delete", account.email, "--yes"]
    )
    assert deleted.exit_code == 0, deleted.output
    assert "tomb_" in deleted.output
    assert (await client.get("/api/v1/me", headers=account.headers)).status_code == 401
    missing = await asyncio.to_thread(
        runner.invoke, cli_app, ["users", "delete", account.email, "--yes"]
    )
    assert missing.exit_code == 1
