"""API keys: shown once, hashed at rest, stop working the moment they are deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select, update

from levqor.accounts.models import ApiKey, User
from levqor.runtime import Runtime
from tests.conftest import assert_problem


async def create_key(client: httpx.AsyncClient, account: Any, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/api-keys", json={"name": "ci", **body}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_key_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    created = await create_key(client, account)
    assert created["id"].startswith("key_")
    assert created["key"].startswith("lvq_")
    assert len(created["key"]) >= 4 + 43
    assert created["key"].startswith(created["prefix"])
    assert created["scopes"] == ["read", "write"]

    listed = (await client.get("/api/v1/api-keys", headers=account.headers)).json()["data"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert "key" not in listed[0]
    async with runtime.db.read() as session:
        stored = await session.scalar(select(ApiKey))
    assert stored is not None
    assert created["key"] not in (stored.key_hash, stored.prefix)
    assert len(stored.key_hash) == 64


async def test_key_works_as_bearer_and_x_api_key(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    key = (await create_key(client, account))["key"]
    bearer = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    header = await client.get("/api/v1/me", headers={"X-Api-Key": key})
    assert bearer.status_code == header.status_code == 200
    assert bearer.json()["id"] == header.json()["id"] == account.id


async def test_use_is_recorded(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    key = (await create_key(client, account))["key"]
    await client.get("/api/v1/me", headers={"X-Api-Key": key})
    listed = (await client.get("/api/v1/api-keys", headers=account.headers)).json()["data"]
    assert listed[0]["last_used_at"] is not None


async def test_deleted_key_is_refused_on_the_next_request(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    created = await create_key(client, account)
    assert (
        await client.get("/api/v1/me", headers={"X-Api-Key": created["key"]})
    ).status_code == 200
    deleted = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=account.headers)
    assert deleted.status_code == 204
    refused = await client.get("/api/v1/me", headers={"X-Api-Key": created["key"]})
    assert_problem(refused, 401, "invalid_token")


async def test_a_deactivated_users_key_and_token_are_refused_for_reads_and_writes(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    key = (await create_key(client, account))["key"]
    async with runtime.db.transaction() as connection:
        await connection.execute(update(User).where(User.id == account.id).values(is_active=False))
    for credential in ({"X-Api-Key": key}, account.headers):
        read = await client.get("/api/v1/me", headers=credential)
        assert_problem(read, 401, "invalid_token")
        write = await client.post("/api/v1/api-keys", json={"name": "x"}, headers=credential)
        assert_problem(write, 401, "invalid_token")
    assert await count_keys(runtime) == 1


async def test_another_users_key_is_not_found(client: httpx.AsyncClient, signup: Any) -> None:
    owner, stranger = await signup(), await signup()
    created = await create_key(client, owner)
    response = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=stranger.headers)
    assert_problem(response, 404, "not_found")
    still = await client.get("/api/v1/me", headers={"X-Api-Key": created["key"]})
    assert still.status_code == 200
    assert (await client.get("/api/v1/api-keys", headers=stranger.headers)).json()["data"] == []


async def test_read_only_key_cannot_write(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    key = (await create_key(client, account, scopes=["read"]))["key"]
    assert (await client.get("/api/v1/me", headers={"X-Api-Key": key})).status_code == 200
    response = await client.post("/api/v1/api-keys", json={"name": "x"}, headers={"X-Api-Key": key})
    assert_problem(response, 403, "insufficient_scope")


async def test_unknown_scope_is_422(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    response = await client.post(
        "/api/v1/api-keys", json={"name": "x", "scopes": ["root"]}, headers=account.headers
    )
    body = assert_problem(response, 422, "invalid_request")
    assert body["errors"][0]["field"] == "scopes[0]"


async def test_unknown_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me", headers={"X-Api-Key": "lvq_" + "x" * 43})
    assert_problem(response, 401, "invalid_token")


async def count_keys(runtime: Runtime) -> int:
    async with runtime.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def test_same_idempotency_key_creates_once_and_replays(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    headers = {**account.headers, "Idempotency-Key": "create-ci-key-1"}
    first = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers)
    second = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert await count_keys(runtime) == 1


async def test_idempotency_keys_are_per_user(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    one, two = await signup(), await signup()
    for account in (one, two):
        response = await client.post(
            "/api/v1/api-keys",
            json={"name": "ci"},
            headers={**account.headers, "Idempotency-Key": "same"},
        )
        assert response.status_code == 201
    assert await count_keys(runtime) == 2


async def test_idempotency_key_with_another_body_is_422(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    headers = {**account.headers, "Idempotency-Key": "k"}
    await client.post("/api/v1/api-keys", json={"name": "one"}, headers=headers)
    response = await client.post("/api/v1/api-keys", json={"name": "two"}, headers=headers)
    assert_problem(response, 422, "idempotency_key_reused")
    assert await count_keys(runtime) == 1


async def test_racing_duplicates_create_one_key(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    headers = {**account.headers, "Idempotency-Key": "race"}
    responses = await asyncio.gather(
        *[client.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers) for _ in range(4)]
    )
    assert {r.status_code for r in responses} <= {201, 409}
    created = [r.json()["id"] for r in responses if r.status_code == 201]
    assert len(set(created)) == 1
    assert await count_keys(runtime) == 1


async def test_stored_answer_is_encrypted(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    from levqor.idempotency.models import IdempotencyRecord

    account = await signup()
    created = await client.post(
        "/api/v1/api-keys", json={"name": "ci"}, headers={**account.headers, "Idempotency-Key": "e"}
    )
    async with runtime.db.read() as session:
        record = await session.scalar(select(IdempotencyRecord))
    assert record is not None
    assert created.json()["key"] not in record.response_encrypted
