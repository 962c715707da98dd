"""The workflows API as a client sees it: create, version, roll back, delete."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from levqor.runtime import Runtime
from levqor.workflows.models import Workflow, WorkflowVersion
from tests.conftest import assert_problem


def definition(name: str = "Alert on big payments", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "big",
                "connector": "filter",
                "params": {"condition": "{{ input.amount > 1000 }}"},
            },
            {
                "id": "notify",
                "connector": "http_request",
                "params": {"method": "POST", "url": "{{ input.hook }}", "json": {"text": "Paid"}},
            },
        ],
        **extra,
    }


async def create(
    client: httpx.AsyncClient, account: Any, body: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/workflows",
        json={"definition": body or definition()},
        headers={**account.headers, **headers},
    )


async def test_create_then_get(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    created = await create(client, account)
    assert created.status_code == 201
    body = created.json()
    assert body["id"].startswith("wf_")
    assert body["version"] == 1
    assert body["trigger"] == "manual"
    assert body["webhook_url"] is None
    assert body["definition"]["steps"][0]["id"] == "big"
    fetched = await client.get(f"/api/v1/workflows/{body['id']}", headers=account.headers)
    assert fetched.json() == body


async def test_webhook_workflow_shows_a_stable_secret_url(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    body = (await create(client, account, definition(trigger={"type": "webhook"}))).json()
    url = body["webhook_url"]
    assert url.startswith(f"http://127.0.0.1:8000/hooks/{body['id']}/")
    token = url.rsplit("/", 1)[1]
    assert len(token) >= 32
    again = await client.get(f"/api/v1/workflows/{body['id']}", headers=account.headers)
    assert again.json()["webhook_url"] == url
    async with runtime.db.read() as session:
        stored = await session.scalar(select(Workflow))
    assert stored is not None
    assert token not in (stored.webhook_token_hash, stored.webhook_token_encrypted)


async def test_put_makes_a_new_current_version_and_keeps_the_old(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow_id = (await create(client, account)).json()["id"]
    updated = await client.put(
        f"/api/v1/workflows/{workflow_id}",
        json={"definition": definition("Renamed")},
        headers=account.headers,
    )
    assert updated.status_code == 200
    assert updated.json()["version"] == 2
    assert updated.json()["name"] == "Renamed"
    versions = (
        await client.get(f"/api/v1/workflows/{workflow_id}/versions", headers=account.headers)
    ).json()["data"]
    assert [(v["version"], v["current"], v["definition"]["name"]) for v in versions] == [
        (2, True, "Renamed"),
        (1, False, "Alert on big payments"),
    ]


async def test_rollback_makes_an_old_version_current(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    workflow_id = (await create(client, account)).json()["id"]
    await client.put(
        f"/api/v1/workflows/{workflow_id}",
        json={"definition": definition("v2")},
        headers=account.headers,
    )
    rolled = await client.post(
        f"/api/v1/workflows/{workflow_id}/rollback", json={"version": 1}, headers=account.headers
    )
    assert rolled.status_code == 200
    assert (rolled.json()["version"], rolled.json()["name"]) == (1, "Alert on big payments")
    newer = await client.put(
        f"/api/v1/workflows/{workflow_id}",
        json={"definition": definition("v3")},
        headers=account.headers,
    )
    assert newer.json()["version"] == 3  # numbers never repeat
    missing = await client.post(
        f"/api/v1/workflows/{workflow_id}/rollback", json={"version": 9}, headers=account.headers
    )
    assert_problem(missing, 404, "not_found")
    huge = await client.post(
        f"/api/v1/workflows/{workflow_id}/rollback",
        json={"version": 2**70},
        headers=account.headers,
    )
    assert_problem(huge, 422, "invalid_request")  # was a 500 (OverflowError)


async def test_delete_hides_the_workflow_but_keeps_its_versions(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    workflow_id = (await create(client, account)).json()["id"]
    deleted = await client.delete(f"/api/v1/workflows/{workflow_id}", headers=account.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/workflows/{workflow_id}", headers=account.headers)
    assert_problem(gone, 404, "not_found")
    assert (await client.get("/api/v1/workflows", headers=account.headers)).json()["data"] == []
    async with runtime.db.read() as session:
        kept = await session.scalar(select(func.count()).select_from(WorkflowVersion))
    assert kept == 1


async def test_list_shows_only_my_workflows_newest_first(
    client: httpx.AsyncClient, signup: Any
) -> None:
    me, other = await signup(), await signup()
    await create(client, me, definition("first"))
    await create(client, me, definition("second"))
    await create(client, other, definition("not mine"))
    listed = (await client.get("/api/v1/workflows", headers=me.headers)).json()["data"]
    assert [item["name"] for item in listed] == ["second", "first"]


async def test_another_users_workflow_is_404_everywhere(
    client: httpx.AsyncClient, signup: Any
) -> None:
    owner, stranger = await signup(), await signup()
    workflow_id = (await create(client, owner)).json()["id"]
    base = f"/api/v1/workflows/{workflow_id}"
    answers = [
        await client.get(base, headers=stranger.headers),
        await client.put(base, json={"definition": definition()}, headers=stranger.headers),
        await client.get(f"{base}/versions", headers=stranger.headers),
        await client.post(f"{base}/rollback", json={"version": 1}, headers=stranger.headers),
        await client.delete(base, headers=stranger.headers),
    ]
    for answer in answers:
        assert_problem(answer, 404, "not_found")
    assert (await client.get(base, headers=owner.headers)).status_code == 200


async def test_invalid_definitions_point_at_the_field(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    semantic = definition()
    semantic["steps"][1]["params"] = {"method": "POST"}
    semantic["steps"].append({"id": "big", "connector": "transform", "params": {}})
    response = await create(client, account, semantic)
    body = assert_problem(response, 422, "invalid_definition")
    fields = {item["field"] for item in body["errors"]}
    assert fields == {"definition.steps[1].params.url", "definition.steps[2].id"}

    structural = definition()
    structural["steps"][0]["timeout_s"] = "soon"
    response = await create(client, account, structural)
    body = assert_problem(response, 422, "invalid_request")
    assert body["errors"][0]["field"] == "definition.steps[0].timeout_s"


async def test_template_reaching_python_internals_is_a_clear_error(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    bad = definition()
    bad["steps"][0]["params"]["condition"] = "{{ ''.__class__ }}"
    body = assert_problem(await create(client, account, bad), 422, "invalid_definition")
    assert body["errors"] == [
        {
            "field": "definition.steps[0].params.condition",
            "message": "access to '__class__' is not allowed",
        }
    ]


async def test_same_idempotency_key_creates_one_workflow(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    first = await create(client, account, None, **{"Idempotency-Key": "wf-1"})
    second = await create(client, account, None, **{"Idempotency-Key": "wf-1"})
    assert first.json() == second.json()
    async with runtime.db.read() as session:
        count = await session.scalar(select(func.count()).select_from(Workflow))
    assert count == 1


async def test_read_only_key_cannot_change_workflows(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    key = (
        await client.post(
            "/api/v1/api-keys", json={"name": "ro", "scopes": ["read"]}, headers=account.headers
        )
    ).json()["key"]
    workflow_id = (await create(client, account)).json()["id"]
    read = await client.get(f"/api/v1/workflows/{workflow_id}", headers={"X-Api-Key": key})
    write = await client.delete(f"/api/v1/workflows/{workflow_id}", headers={"X-Api-Key": key})
    assert read.status_code == 200
    assert_problem(write, 403, "insufficient_scope")
