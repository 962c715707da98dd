"""Domain events: a package tells the packages above it what happened, without importing them.

A lower package publishes a frozen value (`accounts.events.UserSignedUp`,
`billing.events.PaymentRecorded`); a higher package subscribes a handler to it at start-up
(`bootstrap.build_runtime` calls each package's `reactions.register`). Handlers run at
once, in the publisher's session and so in its transaction: a signup and its credit grant
commit together or not at all, and a handler's error fails the publisher's operation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

Event = TypeVar("Event")
Handler = Callable[[AsyncSession, Event], Awaitable[None]]


class Events:
    def __init__(self) -> None:
        self._handlers: defaultdict[type[Any], list[Handler[Any]]] = defaultdict(list)

    def subscribe(self, kind: type[Event], handler: Handler[Event]) -> None:
        """Run `handler` for every event of type `kind`, in the order subscribed."""
        self._handlers[kind].append(handler)

    async def publish(self, session: AsyncSession, event: object) -> None:
        for handler in self._handlers.get(type(event), ()):
            await handler(session, event)
