"""What compliance gives the engine (`jobs.hooks.JobHooks`, wired at start-up): the
suppression list and unsubscribe links for mail steps, export builds on each scheduler
tick, and the pruning of expired exports at upkeep.

`exports` (and the erasure registry behind it, which loads every domain's models) is
imported by the two scheduler tasks when they first run: a worker, started by the dozen,
only ever needs the suppression list, and loads it (`service`, with compliance's models)
at its first mail step."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.jobs.hooks import UpkeepTask
from levqor.periodic import TickTask


class SuppressionRules:
    def __init__(self, db: Database, settings: Settings) -> None:
        key = settings.blind_index_key
        assert key is not None  # load_settings always fills it
        self.db = db
        self.public_url = settings.public_url
        self._key = key.get_secret_value()

    async def suppressed(self, *, user_id: str, address: str, marketing: bool) -> bool:
        from levqor.compliance import service

        async with self.db.session(write=False) as session:
            return await service.is_suppressed(
                session, key=self._key, user_id=user_id, address=address, marketing=marketing
            )

    def unsubscribe_url(self, *, user_id: str, address: str) -> str:
        from levqor.compliance import service

        return service.unsubscribe_url(self.public_url, self._key, user_id=user_id, address=address)


def tick_tasks(db: Database, settings: Settings) -> tuple[TickTask, ...]:
    async def build_exports() -> object:
        from levqor.compliance import exports

        return await exports.build_pending(db, settings=settings)

    return (build_exports,)


async def _prune_exports(session: AsyncSession, now: datetime) -> dict[str, int]:
    from levqor.compliance import exports

    return {"data_exports": await exports.prune(session, now=now)}


UPKEEP_TASKS: tuple[UpkeepTask, ...] = (_prune_exports,)
