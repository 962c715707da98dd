"""What billing does when a lower package publishes a domain event (wired at start-up)."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.events import UserCreated
from levqor.billing import service
from levqor.config import Settings
from levqor.events import Events


def register(events: Events, settings: Settings) -> None:
    events.subscribe(UserCreated, partial(_grant_opening_credits, settings=settings))


async def _grant_opening_credits(
    session: AsyncSession, event: UserCreated, *, settings: Settings
) -> None:
    await service.grant_opening_credits(
        session, user_id=event.user_id, credits=settings.free_credits
    )
