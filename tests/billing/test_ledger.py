"""The credit ledger: every change to a balance leaves a row that explains it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select

from levqor.billing.models import CreditEntry
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import hook_path, make_workflow, start, webhook_workflow


async def entries(client: httpx.AsyncClient, account: Any, **params: Any) -> dict[str, Any]:
    answer = await client.get("/api/v1/billing/ledger", headers=account.headers, params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_signup_grant_and_each_run_are_entries_that_sum_to_the_balance(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    job_ids = [(await start(client, account, workflow_id)).json()["job_id"] for _ in range(2)]
    hooked = await webhook_workflow(client, account)
    hook = await client.post(hook_path(hooked), json={"amount": 1})
    assert hook.status_code == 202
    job_ids.append(hook.json()["job_id"])

    ledger = (await entries(client, account))["data"]
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert [entry["reason"] for entry in ledger] == ["run", "run", "run", "signup_grant"]
    assert [entry["delta"] for entry in ledger] == [-1, -1, -1, 50]
    assert [entry["balance_after"] for entry in ledger] == [47, 48, 49, 50]
    assert [entry["job_id"] for entry in ledger[:3]] == job_ids[::-1]
    assert sum(entry["delta"] for entry in ledger) == me["credits"] == 47


async def test_the_ledger_pages_with_a_cursor_and_is_private(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account, other = await signup(), await signup()
    workflow_id = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    for _ in range(4):
        await start(client, account, workflow_id)
    first = await entries(client, account, limit=3)
    second = await entries(client, account, limit=3, cursor=first["next_cursor"])
    assert len(first["data"]) == 3
    assert first["next_cursor"]
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None
    ids = [entry["id"] for entry in first["data"] + second["data"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 5
    theirs = await entries(client, other)
    assert [entry["reason"] for entry in theirs["data"]] == ["signup_grant"]
    assert (await client.get("/api/v1/billing/ledger")).status_code == 401


async def test_a_refused_run_writes_no_entry(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    hooked = await webhook_workflow(client, account)
    async with runtime.db.write() as session, session.begin():
        from levqor.accounts.models import User

        user = await session.get(User, account.id)
        assert user is not None
        user.credits = 0
    assert_problem(await start(client, account, workflow_id), 402, "insufficient_credits")
    assert_problem(await client.post(hook_path(hooked), json={}), 402, "insufficient_credits")
    async with runtime.db.read() as session:
        runs = await session.scalar(
            select(func.count()).where(
                CreditEntry.user_id == account.id, CreditEntry.reason == "run"
            )
        )
    assert runs == 0


async def test_twenty_runs_at_once_on_ten_credits_run_exactly_ten(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    """On PostgreSQL the twenty requests race on separate connections: the balance
    never goes below zero, exactly ten are charged, and the ledger sums to it."""
    from levqor.accounts.models import User

    account = await signup()
    workflow_id = await make_workflow(client, account, {"id": "a", "connector": "transform"})
    async with runtime.db.write() as session, session.begin():
        user = await session.get(User, account.id)
        assert user is not None
        user.credits = 10
        session.add(CreditEntry(user_id=account.id, delta=-40, balance_after=10, reason="run"))
    answers = await asyncio.gather(*(start(client, account, workflow_id) for _ in range(20)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202] * 10 + [402] * 10
    me = (await client.get("/api/v1/me", headers=account.headers)).json()
    assert me["credits"] == 0
    async with runtime.db.read() as session:
        deltas = (
            await session.scalars(
                select(CreditEntry.delta).where(CreditEntry.user_id == account.id)
            )
        ).all()
        lowest = await session.scalar(
            select(func.min(CreditEntry.balance_after)).where(CreditEntry.user_id == account.id)
        )
    assert sum(deltas) == 0
    assert lowest == 0
