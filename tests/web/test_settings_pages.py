"""Credentials and API keys through the dashboard: secrets shown once (keys) or never
(credentials), usable at once, deletable, and nobody else's."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text

from levqor.runtime import Runtime
from tests.factories import signed_in


async def test_a_credential_is_saved_encrypted_and_never_shown_again(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "creds@example.com")
    form = await client.get("/app/credentials/new?connector=slack")
    assert form.status_code == 200
    assert 'name="secret_' in form.text  # the fields the catalogue declares
    saved = await client.post(
        "/app/credentials",
        data={
            "csrf_token": token,
            "connector": "slack",
            "name": "team slack",
            "secret_bot_token": "xoxb-secret-value-123",
            "extra": "",
        },
    )
    assert saved.status_code == 303
    listing = await client.get("/app/credentials")
    assert "team slack" in listing.text
    assert "xoxb-secret-value-123" not in listing.text
    async with runtime.db.read() as session:
        stored = (await session.execute(text("SELECT secret_encrypted FROM credentials"))).all()
    assert "xoxb-secret-value-123" not in str(stored)
    credential_id = re.search(r"<code>(cred_\w+)</code>", listing.text)
    assert credential_id
    gone = await client.post(
        f"/app/credentials/{credential_id.group(1)}/delete", data={"csrf_token": token}
    )
    assert gone.status_code == 303
    assert "team slack" not in (await client.get("/app/credentials")).text


async def test_a_credential_form_with_bad_fields_says_why(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "badcreds@example.com")
    empty = await client.post(
        "/app/credentials",
        data={"csrf_token": token, "connector": "slack", "name": "x", "extra": ""},
    )
    assert empty.status_code == 400
    assert 'role="alert"' in empty.text
    not_json = await client.post(
        "/app/credentials",
        data={"csrf_token": token, "connector": "slack", "name": "x", "extra": "{port"},
    )
    assert not_json.status_code == 422
    assert (await client.get("/app/credentials/new?connector=nope")).status_code == 404


async def test_an_api_key_is_shown_once_and_works(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "keys@example.com")
    made = await client.post(
        "/app/keys", data={"csrf_token": token, "name": "ci", "scopes": "read"}
    )
    assert made.status_code == 200
    key = re.search(r'<code id="new-key">([^<]+)</code>', made.text)
    assert key
    me = await client.get("/api/v1/me", headers={"X-Api-Key": key.group(1)})
    assert me.status_code == 200
    assert me.json()["email"] == "keys@example.com"
    listing = await client.get("/app/keys")
    assert key.group(1) not in listing.text  # never again
    assert "ci" in listing.text
    key_id = re.search(r'action="/app/keys/(key_\w+)/delete"', listing.text)
    assert key_id
    await client.post(f"/app/keys/{key_id.group(1)}/delete", data={"csrf_token": token})
    revoked = await client.get("/api/v1/me", headers={"X-Api-Key": key.group(1)})
    assert revoked.status_code == 401


async def test_another_users_credential_and_key_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "first@example.com")
    await client.post(
        "/app/credentials",
        data={"csrf_token": token, "connector": "slack", "name": "mine", "secret_bot_token": "t"},
    )
    made = await client.post("/app/keys", data={"csrf_token": token, "name": "k"})
    credential = re.search(r"<code>(cred_\w+)</code>", (await client.get("/app/credentials")).text)
    key = re.search(r'action="/app/keys/(key_\w+)/delete"', made.text)
    assert credential
    assert key
    client.cookies.clear()
    other = await signed_in(client, "second@example.com")
    stolen = await client.post(
        f"/app/credentials/{credential.group(1)}/delete", data={"csrf_token": other}
    )
    assert stolen.status_code == 404
    assert (
        await client.post(f"/app/keys/{key.group(1)}/delete", data={"csrf_token": other})
    ).status_code == 404


async def test_credential_values_the_api_would_refuse_are_refused(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "nan@example.com")
    answer = await client.post(
        "/app/credentials",
        data={
            "csrf_token": token,
            "connector": "slack",
            "name": "x",
            "secret_bot_token": "t",
            "extra": '{"port": NaN}',
        },
    )
    assert answer.status_code == 422
    assert "<code>cred_" not in (await client.get("/app/credentials")).text
