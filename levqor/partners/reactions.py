"""What partners do when a lower package publishes a domain event (wired at start-up)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.events import UserSignedUp
from levqor.config import Settings
from levqor.events import Events
from levqor.partners import service


def register(events: Events, settings: Settings) -> None:
    events.subscribe(UserSignedUp, _attribute_referral)


async def _attribute_referral(session: AsyncSession, event: UserSignedUp) -> None:
    await service.attribute(session, user_id=event.user_id, code=event.referral_code)
