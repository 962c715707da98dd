"""The credentials vault: sealed at rest, never shown, usable only by its owner's steps."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from levqor.db.base import Base
from levqor.jobs.worker import Worker
from levqor.runtime import Runtime
from tests.conftest import assert_problem
from tests.factories import SECRET, add_credential, job, make_workflow, start


async def test_a_credential_is_sealed_at_rest_and_never_shown(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    created = await add_credential(client, account)
    assert created.status_code == 201
    assert created.json()["id"].startswith("cred_")
    assert SECRET not in created.text
    listed = await client.get("/api/v1/credentials", headers=account.headers)
    assert [item["name"] for item in listed.json()["data"]] == ["Sales workspace"]
    assert SECRET not in listed.text
    async with runtime.db.read() as session:
        [stored] = (await session.execute(text("SELECT secret_encrypted FROM credentials"))).all()
    assert SECRET not in stored[0]
    assert SECRET.encode() not in stored[0].encode()


async def test_a_credential_must_carry_what_its_connector_needs(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    wrong = await add_credential(client, account, password="x")
    assert_problem(wrong, 400, "invalid_request")
    assert "bot_token" in wrong.json()["detail"]
    unknown = await client.post(
        "/api/v1/credentials",
        headers=account.headers,
        json={"connector": "fax", "name": "n", "secret": {"k": "v"}},
    )
    assert_problem(unknown, 400, "unknown_action")


async def test_deleting_is_owner_only(client: httpx.AsyncClient, signup: Any) -> None:
    owner, stranger = await signup(), await signup()
    credential_id = (await add_credential(client, owner)).json()["id"]
    theirs = await client.delete(f"/api/v1/credentials/{credential_id}", headers=stranger.headers)
    assert_problem(theirs, 404, "not_found")
    mine = await client.delete(f"/api/v1/credentials/{credential_id}", headers=owner.headers)
    assert mine.status_code == 204
    assert (await client.get("/api/v1/credentials", headers=owner.headers)).json()["data"] == []


async def test_a_step_uses_its_owners_credential_and_never_anothers(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any
) -> None:
    owner, stranger = await signup(), await signup()
    http_peer.reply(200, {"ok": True, "channel": "C1", "ts": "1.2"})
    credential_id = (await add_credential(client, owner, base_url=http_peer.url)).json()["id"]
    step = {
        "id": "notify",
        "connector": "slack",
        "credential": credential_id,
        "params": {"channel": "#sales", "text": "Paid {{ input.cents }}"},
    }
    mine = await start(client, owner, await make_workflow(client, owner, step), {"cents": 5})
    theirs = await start(
        client, stranger, await make_workflow(client, stranger, step), {"cents": 1}
    )
    worker = Worker(runtime, concurrency=2)
    await worker.drain()
    await worker.http.aclose()
    done = await job(client, owner, mine.json()["job_id"])
    assert done["status"] == "succeeded"
    assert done["result"] == {"ok": True, "channel": "C1", "ts": "1.2"}
    [request] = http_peer.requests  # the stranger's run never reached Slack
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    assert request["json"] == {"channel": "#sales", "text": "Paid 5"}
    refused = await job(client, stranger, theirs.json()["job_id"])
    assert refused["status"] == "failed"
    assert refused["attempts"] == 1  # not retried: retrying cannot help
    assert "does not exist" in refused["error"]
    assert SECRET not in str(refused)


def test_every_encrypted_column_is_marked_for_key_rotation() -> None:
    for table in Base.metadata.tables.values():
        for column in table.columns:
            if column.name.endswith("_encrypted"):
                assert column.info.get("encrypted"), f"{table.name}.{column.name}"


async def test_a_429_from_the_service_makes_the_engine_wait_as_asked(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime, http_peer: Any
) -> None:
    from datetime import datetime, timedelta

    from levqor.db.base import utcnow

    account = await signup()
    http_peer.reply(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "120"})
    credential_id = (await add_credential(client, account, base_url=http_peer.url)).json()["id"]
    step = {
        "id": "notify",
        "connector": "slack",
        "credential": credential_id,
        "params": {"channel": "#sales", "text": "hi"},
    }
    job_id = (await start(client, account, await make_workflow(client, account, step))).json()[
        "job_id"
    ]
    worker = Worker(runtime, concurrency=1)
    await worker.drain()
    await worker.http.aclose()
    waiting = await job(client, account, job_id)
    assert waiting["status"] == "retrying"
    next_attempt = datetime.fromisoformat(waiting["next_attempt_at"])
    assert next_attempt >= utcnow() + timedelta(seconds=110)
    assert len(http_peer.requests) == 1
