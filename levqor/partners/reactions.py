"""What partners do when a lower package publishes a domain event (wired at start-up).

The service, with its tables, loads at the first such event: a worker never publishes
one (sign-ups and payments arrive through the API), and loading it was 3% of a worker's
start."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from levqor.accounts.events import UserSignedUp
from levqor.billing.events import (
    ConnectAccountUpdated,
    PaymentLost,
    PaymentRecorded,
    PaymentRegained,
)
from levqor.config import Settings
from levqor.events import Events


def register(events: Events, settings: Settings) -> None:
    events.subscribe(UserSignedUp, partial(_attribute_referral, settings=settings))
    events.subscribe(PaymentRecorded, partial(_earn_commission, settings=settings))
    events.subscribe(PaymentLost, _take_back_commission)
    events.subscribe(PaymentRegained, _restore_commission)
    events.subscribe(ConnectAccountUpdated, _account_updated)


async def _attribute_referral(
    session: AsyncSession, event: UserSignedUp, *, settings: Settings
) -> None:
    from levqor.partners import service

    await service.attribute(session, signed_up=event, settings=settings)


async def _earn_commission(
    session: AsyncSession, event: PaymentRecorded, *, settings: Settings
) -> None:
    from levqor.partners import service

    await service.on_payment(session, payment=event, settings=settings)


async def _take_back_commission(session: AsyncSession, event: PaymentLost) -> int:
    from levqor.partners import service

    return await service.reverse_for_refund(session, lost=event)


async def _restore_commission(session: AsyncSession, event: PaymentRegained) -> None:
    from levqor.partners import service

    await service.restore_commission(session, regained=event)


async def _account_updated(session: AsyncSession, event: ConnectAccountUpdated) -> None:
    from levqor.partners import service

    await service.on_account_updated(session, updated=event)
