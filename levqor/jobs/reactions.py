"""What the engine does when a lower package publishes a domain event (wired at start-up)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.billing.events import SpendResumed
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.events import Events
from levqor.jobs import queue


def register(events: Events, _settings: Settings) -> None:
    events.subscribe(SpendResumed, _release_held_runs)


async def _release_held_runs(session: AsyncSession, event: SpendResumed) -> int:
    """A spend-guard pause lifted: the runs it held go back to the queue at once (the
    user's, or everyone's for the server's pause)."""
    return await queue.release_held(session, now=utcnow(), user_id=event.user_id, due_only=False)
