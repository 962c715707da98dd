"""What the engine needs from the packages above it, given at start-up (`bootstrap`).

jobs sits under partners and compliance, so it names what it needs as small interfaces
here and the composition root hands it their implementations: compliance's suppression
list and unsubscribe links for mail steps, its export builds each scheduler tick and its
pruning at upkeep. Hooks for steps of one connector (billing's spend guard for `llm`)
come the same way, keyed by connector name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.periodic import TickTask


class MailRules(Protocol):
    """Who may not be mailed, and the one-click unsubscribe link of marketing mail."""

    async def suppressed(self, *, user_id: str, address: str, marketing: bool) -> bool: ...

    def unsubscribe_url(self, *, user_id: str, address: str) -> str: ...


class StepHooks(Protocol):
    """Run around every step of one connector: `before` may refuse the step by raising
    (a connector error, classified like any other), `after` sees its stored output."""

    async def before(self, *, user_id: str) -> None: ...

    async def after(self, *, user_id: str, output: Any) -> None: ...


class NoMailRules:
    """Nobody suppressed and no unsubscribe link: for an engine wired without compliance."""

    async def suppressed(self, *, user_id: str, address: str, marketing: bool) -> bool:
        return False

    def unsubscribe_url(self, *, user_id: str, address: str) -> str:
        return ""


# Runs each scheduler tick (after the cron fires); its failure is logged, never the tick's.
# Runs in the upkeep's transaction at `now`; returns named counts of what it deleted.
UpkeepTask = Callable[[AsyncSession, datetime], Awaitable[dict[str, int]]]


def _no_tick_tasks() -> tuple[TickTask, ...]:
    return ()


@dataclass(frozen=True)
class JobHooks:
    mail_rules: MailRules = field(default_factory=NoMailRules)
    step_hooks: Mapping[str, StepHooks] = field(default_factory=dict)
    # Built on first use, by the scheduler: a worker never imports what they need.
    build_tick_tasks: Callable[[], tuple[TickTask, ...]] = _no_tick_tasks
    on_upkeep: tuple[UpkeepTask, ...] = ()

    @cached_property
    def on_tick(self) -> tuple[TickTask, ...]:
        return self.build_tick_tasks()
