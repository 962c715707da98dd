"""Domain events: a package tells the packages above it what happened, without importing them.

A lower package publishes a frozen value (`accounts.events.UserSignedUp`,
`billing.events.PaymentRecorded`) with `publish(session, event)`; a higher package
subscribes a handler to it at start-up (`bootstrap.subscribed_events` calls each
package's `reactions.register`). Handlers run at once, in the publisher's session and so
in its transaction: a signup and its credit grant commit together or not at all, and a
handler's error fails the publisher's operation.

The subscriptions travel with the database (`create_database(..., events=...)` puts them
in each session's `info`), so a service that has a session can publish without every
caller passing the bus down.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

Event = TypeVar("Event")
Handler = Callable[[AsyncSession, Event], Awaitable[object]]


class Events:
    def __init__(self) -> None:
        self._handlers: defaultdict[type[Any], list[Handler[Any]]] = defaultdict(list)

    def subscribe(self, kind: type[Event], handler: Handler[Event]) -> None:
        """Run `handler` for every event of type `kind`, in the order subscribed."""
        self._handlers[kind].append(handler)

    async def publish(self, session: AsyncSession, event: object) -> list[object]:
        """Run the handlers of `event`; what each returned, in order (most return None;
        a handler may answer with a fact, such as the commission a refund took back)."""
        return [await handler(session, event) for handler in self._handlers.get(type(event), ())]


SESSION_KEY = "levqor_events"


async def publish(session: AsyncSession, event: object) -> list[object]:
    """Publish `event` to the subscriptions of the database `session` came from."""
    events: Events | None = session.info.get(SESSION_KEY)
    if events is None:
        raise RuntimeError("this session has no domain events: open it from a Database")
    return await events.publish(session, event)
