"""Privacy from the dashboard: download my data, marketing e-mail, delete my account; and
the usage chart."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from levqor.compliance.models import Consent
from levqor.runtime import Runtime
from tests.conftest import PASSWORD
from tests.factories import TRANSFORM, save_page_workflow, signed_in


async def test_downloading_my_data_gives_a_json_file_about_me(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "mine@example.com")
    answer = await client.post("/app/privacy/export", data={"csrf_token": token})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    assert "mine@example.com" in answer.text


async def test_the_marketing_choice_is_recorded(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await signed_in(client, "news@example.com")
    await client.post("/app/privacy/marketing", data={"csrf_token": token, "granted": "true"})
    assert "checked" in (await client.get("/app/privacy")).text
    await client.post("/app/privacy/marketing", data={"csrf_token": token})
    async with runtime.db.read() as session:
        choices = [c.granted for c in await session.scalars(select(Consent).order_by(Consent.id))]
    assert choices == [False, True, False]  # signup's, then the two choices


async def test_deleting_my_account_needs_my_password_and_ends_everything(
    client: httpx.AsyncClient,
) -> None:
    token = await signed_in(client, "leaving@example.com")
    wrong = await client.post("/app/privacy/delete", data={"csrf_token": token, "password": "no"})
    assert wrong.status_code == 403
    assert 'role="alert"' in wrong.text
    gone = await client.post(
        "/app/privacy/delete", data={"csrf_token": token, "password": PASSWORD}
    )
    assert (gone.status_code, gone.headers["location"]) == (303, "/?erased=1")
    assert "erased" in (await client.get("/?erased=1")).text
    assert (await client.get("/app")).status_code == 303  # signed out
    login_token = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/login")).text)
    assert login_token
    again = await client.post(
        "/login",
        data={
            "email": "leaving@example.com",
            "password": PASSWORD,
            "csrf_token": login_token.group(1),
        },
    )
    assert again.status_code == 401


async def test_usage_charts_my_runs_a_day(client: httpx.AsyncClient) -> None:
    token = await signed_in(client, "busy@example.com")
    workflow = (await save_page_workflow(client, token, TRANSFORM)).headers["location"]
    for _ in range(4):
        await client.post(f"{workflow}/runs", data={"csrf_token": token})
    page = await client.get("/app/usage")
    assert page.status_code == 200
    assert page.text.count("<rect ") == 30
    assert '<p class="price">4</p>' in page.text
