"""Domain events: what a package publishes reaches its subscribers in the same
transaction, so a flow across packages commits whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import events
from levqor.accounts.events import UserSignedUp
from levqor.accounts.models import User
from levqor.billing.models import CreditEntry
from levqor.compliance.models import Consent
from levqor.runtime import Runtime
from tests.conftest import PASSWORD


@dataclass(frozen=True)
class Happened:
    what: str


async def test_handlers_run_in_order_and_their_answers_come_back(runtime: Runtime) -> None:
    bus = events.Events()
    seen: list[str] = []

    async def first(_session: AsyncSession, event: Happened) -> None:
        seen.append(f"first {event.what}")

    async def second(_session: AsyncSession, event: Happened) -> int:
        seen.append(f"second {event.what}")
        return 7

    bus.subscribe(Happened, first)
    bus.subscribe(Happened, second)
    async with runtime.db.session(write=False) as session:
        assert await bus.publish(session, Happened("a")) == [None, 7]
        assert await bus.publish(session, object()) == []  # nobody listens: nothing runs
    assert seen == ["first a", "second a"]


async def test_a_session_from_a_database_carries_its_subscriptions(runtime: Runtime) -> None:
    async with runtime.db.session(write=False) as session:
        assert runtime.db.events is session.info[events.SESSION_KEY]


async def test_publishing_without_subscriptions_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no domain events"):
        await events.publish(AsyncSession(), Happened("lost"))


async def test_a_failing_subscriber_undoes_the_whole_signup(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    class Refused(Exception):
        pass

    async def refuse(_session: AsyncSession, _event: UserSignedUp) -> None:
        raise Refused

    runtime.db.events.subscribe(UserSignedUp, refuse)
    response = await client.post(
        "/api/v1/auth/signup", json={"email": "gone@example.com", "password": PASSWORD}
    )
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    async with runtime.db.read() as session:
        for table in (User, CreditEntry, Consent):
            assert await session.scalar(select(func.count()).select_from(table)) == 0


async def test_signup_gets_its_opening_credits_through_billing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/api/v1/auth/signup", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["credits"] == runtime.settings.free_credits > 0
    async with runtime.db.read() as session:
        ledger = (await session.execute(select(CreditEntry.delta, CreditEntry.reason))).all()
    assert ledger == [(runtime.settings.free_credits, "signup_grant")]
