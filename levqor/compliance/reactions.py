"""What compliance does when a lower package publishes a domain event (wired at start-up).

The service, with compliance's tables, loads at the first such event: a worker never
publishes one (sign-ups arrive through the API)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.events import UserSignedUp
from levqor.config import Settings
from levqor.events import Events


def register(events: Events, settings: Settings) -> None:
    events.subscribe(UserSignedUp, _record_consent)


async def _record_consent(session: AsyncSession, event: UserSignedUp) -> None:
    from levqor.compliance import service

    await service.record_consent(
        session,
        user_id=event.user_id,
        kind="marketing_email",
        granted=event.marketing_consent,
        source="signup",
    )
