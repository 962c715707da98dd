"""One-click unsubscribe (RFC 8058): POST takes effect at once, GET alone never does."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from levqor.compliance import service as compliance
from levqor.compliance.models import EmailSuppression
from levqor.runtime import Runtime


def token_for(runtime: Runtime, user_id: str, address: str) -> str:
    key = runtime.settings.blind_index_key
    assert key is not None
    return compliance.unsubscribe_token(key.get_secret_value(), user_id=user_id, address=address)


async def suppressed(runtime: Runtime, user_id: str, address: str) -> bool:
    key = runtime.settings.blind_index_key
    assert key is not None
    async with runtime.db.read() as session:
        return await compliance.is_suppressed(
            session, key=key.get_secret_value(), user_id=user_id, address=address
        )


async def test_get_shows_a_button_and_unsubscribes_no_one(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    sender = await signup()
    token = token_for(runtime, sender.id, "ada@example.org")
    page = await client.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200
    assert 'method="post"' in page.text
    assert not await suppressed(runtime, sender.id, "ada@example.org")


async def test_one_click_post_unsubscribes_at_once_and_only_from_that_sender(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    sender, other = await signup(), await signup()
    token = token_for(runtime, sender.id, "Ada@Example.org")
    for _ in range(2):  # a repeated click changes nothing
        done = await client.post(
            "/unsubscribe",
            params={"token": token},
            content="List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200
        assert "unsubscribed" in done.text
    assert await suppressed(runtime, sender.id, "ada@example.org")
    assert not await suppressed(runtime, other.id, "ada@example.org")
    async with runtime.db.read() as session:
        rows = await session.scalar(select(func.count()).select_from(EmailSuppression))
    assert rows == 1


async def test_a_forged_or_cut_token_is_refused(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    sender = await signup()
    token = token_for(runtime, sender.id, "ada@example.org")
    signature = token.split(".")[1]
    other_claim = token_for(runtime, sender.id, "bob@example.org").split(".")[0]
    for bad in (f"{other_claim}.{signature}", token[:-3], "not-a-token-at-all"):
        answer = await client.post("/unsubscribe", params={"token": bad})
        assert answer.status_code == 400
        assert "not valid" in answer.text
    assert not await suppressed(runtime, sender.id, "bob@example.org")
    assert not await suppressed(runtime, sender.id, "ada@example.org")
