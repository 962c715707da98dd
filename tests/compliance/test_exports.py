"""Large exports: built in the background, fetched through a signed link that expires."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from levqor.audit import service as audit
from levqor.compliance import exports
from levqor.compliance.models import DataExport
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs.models import Job
from levqor.jobs.scheduler import Scheduler
from levqor.runtime import Runtime
from tests.conftest import PASSWORD, assert_problem

NAME = "Grace Brewster Hopper"


@pytest.fixture
def settings(make_settings: Any, fresh_database: None) -> Settings:
    built: Settings = make_settings(export_inline_max_rows=0)  # every export is "large"
    return built


async def asked(client: httpx.AsyncClient, account: Any) -> dict[str, Any]:
    answer = await client.get("/api/v1/me/export", headers=account.headers)
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/api/v1/me/exports/{answer.json()['id']}"
    body: dict[str, Any] = answer.json()
    return body


async def status(client: httpx.AsyncClient, account: Any, export_id: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/me/exports/{export_id}", headers=account.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def local(url: str) -> str:
    """The path and query of a download link (the test client serves the app itself)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_a_large_export_is_built_in_the_background_and_fetched_by_signed_link(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup(name=NAME)
    pending = await asked(client, account)
    assert pending["status"] == "pending"
    assert pending["download_url"] is None
    again = await asked(client, account)
    assert again["id"] == pending["id"]  # asking twice builds one

    await Scheduler(runtime).tick(utcnow())
    ready = await status(client, account, pending["id"])
    assert ready["status"] == "ready"
    assert ready["size_bytes"] > 0
    assert ready["download_url"].startswith(runtime.settings.public_url)

    # The link needs no login; the document is the same as an inline export's.
    fetched = await client.get(local(ready["download_url"]))
    assert fetched.status_code == 200
    assert fetched.headers["content-disposition"].startswith("attachment;")
    document = fetched.json()
    assert document["user_id"] == account.id
    assert document["data"]["users"][0]["email"] == account.email
    assert document["data"]["users"][0]["name"] == NAME
    assert "purposes" in document["about"]
    plain = await client.get(local(ready["download_url"]), headers={"Accept-Encoding": "identity"})
    assert plain.headers.get("content-encoding") is None
    assert plain.json() == document

    async with runtime.db.read() as session:
        stored = await session.scalar(select(DataExport.document_encrypted))
        actions = [entry.action for entry in await audit.search(session, actor=account.id)]
    assert stored is not None
    assert account.email not in stored  # sealed at rest, like every other copy
    assert NAME not in stored
    assert {"data_export_requested", "data_exported"} <= set(actions)


async def test_a_forged_stretched_or_expired_link_is_refused(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    export_id = (await asked(client, account))["id"]
    await Scheduler(runtime).tick(utcnow())
    url = (await status(client, account, export_id))["download_url"]
    query = parse_qs(urlsplit(url).query)
    expires, signature = int(query["expires"][0]), query["signature"][0]
    base = f"/api/v1/me/exports/{export_id}/download"

    forged = await client.get(base, params={"expires": expires, "signature": "0" * 64})
    assert_problem(forged, 403, "forbidden")
    not_hex = await client.get(base, params={"expires": expires, "signature": "é" * 64})
    assert_problem(not_hex, 422, "invalid_request")  # was a 500 (compare_digest on non-ASCII)
    stretched = await client.get(base, params={"expires": expires + 3600, "signature": signature})
    assert_problem(stretched, 403, "forbidden")

    async with runtime.db.write() as session, session.begin():
        export = await session.get(DataExport, export_id)
        assert export is not None
        export.expires_at = utcnow() - timedelta(seconds=1)
        key = runtime.settings.blind_index_key
        assert key is not None
        old_link = exports.download_path(key.get_secret_value(), export)
    assert_problem(await client.get(old_link), 410, "gone")

    pruned = await Scheduler(runtime).upkeep(utcnow())
    assert pruned["data_exports"] == 1
    assert (
        await client.get(f"/api/v1/me/exports/{export_id}", headers=account.headers)
    ).status_code == 404


async def test_exports_are_private_and_go_with_the_account(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account, other = await signup(), await signup()
    export_id = (await asked(client, account))["id"]
    theirs = await client.get(f"/api/v1/me/exports/{export_id}", headers=other.headers)
    assert_problem(theirs, 404, "not_found")
    await Scheduler(runtime).tick(utcnow())
    url = (await status(client, account, export_id))["download_url"]
    gone = await client.request(
        "DELETE", "/api/v1/me", headers=account.headers, json={"password": PASSWORD}
    )
    assert gone.status_code == 204
    assert_problem(await client.get(local(url)), 410, "gone")  # erased with the account


async def test_a_build_that_died_is_taken_up_again(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    account = await signup()
    export_id = (await asked(client, account))["id"]
    async with runtime.db.write() as session, session.begin():
        await session.execute(
            update(DataExport).values(
                status="building", started_at=utcnow() - exports.STALE_BUILD - timedelta(seconds=1)
            )
        )
    built = await exports.build_pending(runtime.db, settings=runtime.settings)
    assert built == [export_id]
    assert (await status(client, account, export_id))["status"] == "ready"
    assert await exports.build_pending(runtime.db, settings=runtime.settings) == []


async def test_small_exports_still_answer_at_once(make_settings: Any, fresh_database: None) -> None:
    from tests.conftest import serve_app

    async with serve_app(make_settings()) as (client, _runtime):
        signed = await client.post(
            "/api/v1/auth/signup", json={"email": "small@example.com", "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        answer = await client.get("/api/v1/me/export", headers=headers)
    assert answer.status_code == 200
    assert answer.json()["data"]["users"][0]["email"] == "small@example.com"


async def test_a_stored_value_json_cannot_hold_does_not_fail_the_export(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    """A run input stored before intake refused integers past 64 bits: the background
    build (orjson) writes it as its decimal string instead of failing."""
    account = await signup()
    created = await client.post(
        "/api/v1/workflows",
        headers=account.headers,
        json={"definition": {"name": "w", "steps": [{"id": "a", "connector": "transform"}]}},
    )
    queued = await client.post(
        f"/api/v1/workflows/{created.json()['id']}/runs", json={}, headers=account.headers
    )
    async with runtime.db.write() as session, session.begin():
        await session.execute(update(Job).values(input={"id": 2**70}))
    export_id = (await asked(client, account))["id"]
    await Scheduler(runtime).tick(utcnow())
    ready = await status(client, account, export_id)
    assert ready["status"] == "ready", ready
    document = (await client.get(local(ready["download_url"]))).json()
    [job] = [job for job in document["data"]["jobs"] if job["id"] == queued.json()["job_id"]]
    assert job["input"] == {"id": str(2**70)}
