"""What billing publishes (`levqor.events`): facts about money that partners act on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaymentRecorded:
    """Money arrived (a checkout, a plan's invoice): its referrer earns a commission."""

    payment_id: str
    user_id: str
    amount_cents: int
    currency: str


@dataclass(frozen=True)
class PaymentLost:
    """Part of a payment went back (a refund, a dispute): its total lost went from
    `before_cents` to `after_cents`. A handler answers with the commission cents it took
    back, which billing records beside the refund or dispute."""

    payment_id: str
    amount_cents: int
    before_cents: int
    after_cents: int


@dataclass(frozen=True)
class PaymentRegained:
    """Money lost to a dispute came back (the dispute was won): the commission taken
    back with it (`commission_cents`) is owed to its partner again."""

    payment_id: str
    commission_cents: int


@dataclass(frozen=True)
class SpendResumed:
    """A spend-guard pause was lifted by an operator: the runs it held may go on (the
    user's, or with None everyone's)."""

    user_id: str | None


@dataclass(frozen=True)
class ConnectAccountUpdated:
    """Stripe says whether a connected account (a partner's) can receive payouts."""

    account_id: str
    payouts_enabled: bool
