"""Marketing consent is recorded at signup with its time and source."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from levqor.compliance.models import Consent
from levqor.runtime import Runtime


async def consents(runtime: Runtime, user_id: str) -> list[tuple[str, bool, str]]:
    async with runtime.db.read() as session:
        rows = await session.execute(
            select(Consent.kind, Consent.granted, Consent.source).where(Consent.user_id == user_id)
        )
    return [(kind, granted, source) for kind, granted, source in rows]


async def test_consent_given_at_signup_is_recorded(
    client: httpx.AsyncClient, signup: Any, runtime: Runtime
) -> None:
    yes = await signup(marketing_consent=True)
    no = await signup()
    assert await consents(runtime, yes.id) == [("marketing_email", True, "signup")]
    assert await consents(runtime, no.id) == [("marketing_email", False, "signup")]
