"""Billing logic: the credit balance and its ledger, checkout and usage.

Stripe's webhook events are applied in `webhooks.py`, refunds in `refunds.py`.

Every change to `users.credits` writes a ledger row in the same transaction (or the same
statement, on the webhook hot path), so the ledger always explains the balance:
the sum of a user's deltas is their balance. The balance sits on the users row, read
on every run's hot path, but only billing changes it: the opening grant too, on
accounts' `UserCreated` (see `reactions.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    CTE,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from levqor import errors
from levqor.accounts.models import User
from levqor.billing import plans
from levqor.billing.models import (
    CreditEntry,
    Payment,
    StripeCustomer,
    Subscription,
    kept_cents,
)
from levqor.db.base import UTCDateTime, upsert, utcnow

if TYPE_CHECKING:
    from levqor.runtime import Runtime

SIGNUP_GRANT = "signup_grant"
RUN = "run"
PURCHASE = "purchase"
PLAN_CREDITS = "plan_credits"
REFUND = "refund"
DISPUTE = "dispute"
DISPUTE_WON = "dispute_won"
REFUND_UNDONE = "refund_undone"  # Stripe failed or cancelled a refund: credits back
OWED = "refund_owed"  # taken back after being spent: owed, repaid by the next grant
OWED_REPAID = "owed_repaid"
# Stripe statuses in which a subscription still gives its plan.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due"})

ledger_table = cast(Table, CreditEntry.__table__)
users_table = cast(Table, User.__table__)


def short_of_credits(amount: int) -> errors.PaymentRequired:
    return errors.PaymentRequired(f"A run costs {amount} credits; your balance is too low.")


async def grant_opening_credits(session: AsyncSession, *, user_id: str, credits: int) -> None:
    """Give a new account its opening balance, with its ledger row. Through the ORM, so
    the caller's `User` (still in the session) shows the balance at once."""
    if not credits:
        return
    user = await session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    user.credits += credits
    session.add(
        CreditEntry(user_id=user_id, delta=credits, balance_after=user.credits, reason=SIGNUP_GRANT)
    )
    await session.flush()


async def charge_run(
    connection: AsyncSession | AsyncConnection, *, user_id: str, amount: int, job_id: str
) -> bool:
    """Take a run's credits and write its ledger row, in the caller's transaction;
    False, with nothing taken, when the balance is short or the account inactive."""
    [charged] = await charge_runs(connection, user_id=user_id, charges=[(job_id, amount)])
    return charged


async def charge_runs(
    connection: AsyncSession | AsyncConnection,
    *,
    user_id: str,
    charges: Sequence[tuple[str, int]],
) -> list[bool]:
    """Take several runs' credits from one user (`charges`: job id and amount, in
    order) in the caller's transaction: one debit for their sum and a ledger row each
    when the balance covers them all, else run by run, so the first ones that fit go
    through. Which were charged, in order."""
    total = sum(amount for _, amount in charges)
    debited = (
        await connection.execute(
            debit_statement(), {"debit_user_id": user_id, "debit_amount": total}
        )
    ).first()
    if debited is None:
        if len(charges) == 1:
            return [False]
        return [
            await charge_run(connection, user_id=user_id, amount=amount, job_id=job_id)
            for job_id, amount in charges
        ]
    balance, at, entries = debited.credits + total, utcnow(), []
    for job_id, amount in charges:
        balance -= amount
        if amount:
            entries.append(
                {
                    "user_id": user_id,
                    "at": at,
                    "delta": -amount,
                    "balance_after": balance,
                    "reason": RUN,
                    "job_id": job_id,
                }
            )
    if entries:
        await connection.execute(insert(ledger_table), entries)
    return [True] * len(charges)


@cache
def debit_statement() -> Update:
    """Take `:debit_amount` credits from `:debit_user_id` if the balance covers them;
    returns the user's id and new balance if it did. Built once, with bound parameters,
    so the webhook intake can make it part of one larger statement."""
    users = users_table.c
    return (
        update(users_table)
        .where(
            users.id == bindparam("debit_user_id"),
            users.is_active.is_(True),  # a deactivated account starts nothing
            users.credits >= _AMOUNT,
        )
        .values(credits=users.credits - _AMOUNT)
        .returning(users.id, users.credits)
    )


_AMOUNT = bindparam("debit_amount", type_=Integer)


def run_entry_from(debit: CTE, *, job_id: Any) -> Insert:
    """The ledger row of a run, selected from a `debit_statement()` CTE: for a single
    statement that debits, records and queues at once (PostgreSQL). No row for a free
    run."""
    source = select(
        debit.c.id,
        bindparam("ledger_at", type_=UTCDateTime),
        -_AMOUNT,
        debit.c.credits,
        literal(RUN),
        job_id,
    ).where(_AMOUNT > 0)
    columns = ["user_id", "at", "delta", "balance_after", "reason", "job_id"]
    return insert(ledger_table).from_select(columns, source)


async def ledger(
    session: AsyncSession, *, user_id: str, before: int | None = None, limit: int = 100
) -> list[CreditEntry]:
    """A user's ledger entries, newest first, `before` an entry id for the next page."""
    query = select(CreditEntry).where(CreditEntry.user_id == user_id)
    if before is not None:
        query = query.where(CreditEntry.id < before)
    rows = await session.scalars(query.order_by(CreditEntry.id.desc()).limit(limit))
    return list(rows)


async def grant(
    session: AsyncSession,
    *,
    user_id: str,
    credits: int,
    reason: str,
    payment_id: str | None = None,
) -> int | None:
    """Add credits (a purchase, a plan's month) with their ledger row; the new balance,
    or None when the account no longer exists (erased: the money record still stays).
    Credits owed (a refund of credits already spent) are repaid from it first, as a
    ledger row of their own."""
    users = users_table.c
    row = (
        await session.execute(
            update(users_table)
            .where(users.id == user_id)
            .values(credits=users.credits + credits)
            .returning(users.credits, users.credits_owed)
        )
    ).first()
    if row is None:
        return None
    balance, owed = int(row[0]), int(row[1])
    session.add(
        CreditEntry(
            user_id=user_id,
            delta=credits,
            balance_after=balance,
            reason=reason,
            payment_id=payment_id,
        )
    )
    repaid = min(owed, max(credits, 0))
    if repaid:
        balance -= repaid
        await session.execute(
            update(users_table)
            .where(users.id == user_id)
            .values(credits=users.credits - repaid, credits_owed=users.credits_owed - repaid)
        )
        session.add(
            CreditEntry(
                user_id=user_id,
                delta=-repaid,
                balance_after=balance,
                reason=OWED_REPAID,
                payment_id=payment_id,
                owed_after=owed - repaid,
            )
        )
    return balance


def share_of(total: int, whole_cents: int, before_cents: int, after_cents: int) -> int:
    """The part of `total` (credits) that money going from `before_cents` to
    `after_cents` of `whole_cents` stands for, rounded so that the parts of several
    partial refunds add up to exactly `total` once the whole is refunded."""
    if whole_cents <= 0:
        return 0
    return total * after_cents // whole_cents - total * before_cents // whole_cents


async def take_back(
    session: AsyncSession, *, user_id: str, credits: int, reason: str, payment_id: str
) -> int:
    """Remove `credits` (a refund, a dispute): from the balance as far as it goes; the
    rest, already spent on runs, becomes credits owed, repaid by the next grant. How
    many were taken back in all (from the balance and as debt)."""
    row = (
        await session.execute(
            select(User.credits, User.credits_owed).where(User.id == user_id).with_for_update()
        )
    ).first()
    if row is None or credits <= 0:
        return 0
    balance, owed = int(row[0]), int(row[1])
    taken = min(credits, balance)
    still_owed = credits - taken
    await session.execute(
        update(users_table)
        .where(users_table.c.id == user_id)
        .values(
            credits=users_table.c.credits - taken,
            credits_owed=users_table.c.credits_owed + still_owed,
        )
    )
    if taken:
        session.add(
            CreditEntry(
                user_id=user_id,
                delta=-taken,
                balance_after=balance - taken,
                reason=reason,
                payment_id=payment_id,
            )
        )
    if still_owed:
        session.add(
            CreditEntry(
                user_id=user_id,
                delta=0,
                balance_after=balance - taken,
                reason=OWED,
                payment_id=payment_id,
                owed_after=owed + still_owed,
            )
        )
    return credits


class UnknownProduct(errors.InvalidRequest):
    code = "unknown_product"


class AlreadySubscribed(errors.Conflict):
    code = "already_subscribed"


async def checkout(
    runtime: Runtime, *, user: User, plan: str | None, pack: str | None
) -> tuple[str, str]:
    """A Stripe Checkout session for a plan (monthly) or a credit pack (once):
    `(session_id, url)`. Nothing is granted here; the webhook does that once Stripe says
    the money arrived. No database transaction is held while Stripe is called."""
    params = _checkout_items(runtime.settings.billing_currency, plan=plan, pack=pack)
    async with runtime.db.session(write=False) as session:
        if plan is not None and await live_subscription(session, user_id=user.id):
            raise AlreadySubscribed(
                "You already have a plan: change or cancel it in the billing portal "
                "(POST /api/v1/billing/portal)."
            )
        customer = await session.scalar(
            select(StripeCustomer.customer_id).where(StripeCustomer.user_id == user.id)
        )
    if customer is None:
        customer = await runtime.stripe.create_customer(email=user.email, user_id=user.id)
        async with runtime.db.session(write=True) as session, session.begin():
            await remember_customer(session, user_id=user.id, customer_id=customer)
    base = runtime.settings.public_url
    product = {"plan": plan} if plan else {"pack": pack or ""}
    params |= {
        "customer": customer,
        "client_reference_id": user.id,
        "metadata": {"user_id": user.id, **product},
        "success_url": f"{base}/billing?checkout=done&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base}/billing?checkout=cancelled",
    }
    if plan:
        params["subscription_data"] = {"metadata": {"user_id": user.id, "plan": plan}}
    return await runtime.stripe.create_checkout(params)


class NoCustomer(errors.NotFound):
    code = "no_billing_account"


async def portal(runtime: Runtime, *, user: User) -> str:
    """Where a paying user manages their plan, card and invoices (Stripe's portal)."""
    async with runtime.db.session(write=False) as session:
        customer = await session.scalar(
            select(StripeCustomer.customer_id).where(StripeCustomer.user_id == user.id)
        )
    if customer is None:
        raise NoCustomer("You have not bought anything yet; there is nothing to manage.")
    return await runtime.stripe.portal(
        customer_id=customer, return_url=f"{runtime.settings.public_url}/billing"
    )


def _checkout_items(currency: str, *, plan: str | None, pack: str | None) -> dict[str, Any]:
    if (plan is None) == (pack is None):
        raise errors.InvalidRequest("Give either a plan or a pack.")
    if plan is not None:
        chosen = plans.PLANS.get(plan)
        if chosen is None or chosen.price_cents == 0:
            raise UnknownProduct(f"There is no paid plan {plan!r}.")
        price: dict[str, Any] = {
            "currency": currency,
            "unit_amount": chosen.price_cents,
            "recurring": {"interval": "month"},
            "product_data": {"name": f"Levqor {chosen.title}"},
        }
        return {"mode": "subscription", "line_items": [{"price_data": price, "quantity": 1}]}
    bought = plans.PACKS.get(pack or "")
    if bought is None:
        raise UnknownProduct(f"There is no credit pack {pack!r}.")
    price = {
        "currency": currency,
        "unit_amount": bought.price_cents,
        "product_data": {"name": f"Levqor {bought.title}"},
    }
    return {"mode": "payment", "line_items": [{"price_data": price, "quantity": 1}]}


async def remember_customer(session: AsyncSession, *, user_id: str, customer_id: str) -> None:
    """The user's Stripe customer, unless one is known already."""
    dialect = session.get_bind().dialect.name
    await session.execute(
        upsert(dialect, StripeCustomer.__table__)
        .values(user_id=user_id, customer_id=customer_id, created_at=utcnow())
        .on_conflict_do_nothing()
    )


async def live_subscription(session: AsyncSession, *, user_id: str) -> Subscription | None:
    return cast(
        Subscription | None,
        await session.scalar(
            select(Subscription)
            .where(Subscription.user_id == user_id, Subscription.status.in_(LIVE_STATUSES))
            .limit(1)
        ),
    )


async def cancel_subscriptions(runtime: Runtime, *, user_id: str) -> list[str]:
    """Cancel at Stripe every subscription of `user_id` that still bills (erasure)."""
    async with runtime.db.session(write=False) as session:
        ids = list(
            await session.scalars(
                select(Subscription.id).where(
                    Subscription.user_id == user_id, Subscription.status != "canceled"
                )
            )
        )
    for subscription_id in ids:
        await runtime.stripe.cancel_subscription(subscription_id)
    return ids


@dataclass(frozen=True)
class Usage:
    plan: str
    credits: int
    period_start: datetime
    period_end: datetime
    runs: int
    credits_spent: int
    paid_cents: int
    currency: str


async def usage(session: AsyncSession, *, user: User, currency: str) -> Usage:
    """This calendar month (UTC): runs, credits spent on them, money paid."""
    start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    ledger_rows = CreditEntry.user_id == user.id, CreditEntry.at >= start, CreditEntry.reason == RUN
    runs, spent = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(-CreditEntry.delta), 0)).where(*ledger_rows)
        )
    ).one()
    paid = await session.scalar(
        select(func.coalesce(func.sum(kept_cents()), 0)).where(
            Payment.user_id == user.id, Payment.created_at >= start
        )
    )
    return Usage(
        plan=user.plan,
        credits=user.credits,
        period_start=start,
        period_end=end,
        runs=int(runs),
        credits_spent=int(spent),
        paid_cents=int(paid or 0),
        currency=currency,
    )


async def count_payers(session: AsyncSession, *, among: Select[Any]) -> int:
    """How many of the users `among` selects have paid at least once (and kept it: a
    payment refunded or disputed in full does not count)."""
    payers = await session.scalar(
        select(func.count(func.distinct(Payment.user_id))).where(
            Payment.user_id.in_(among), kept_cents() > 0
        )
    )
    return int(payers or 0)


async def payments_so_far(session: AsyncSession, *, user_id: str) -> tuple[int, datetime | None]:
    """How many payments the user has made (the one being recorded included) and when
    the first was."""
    count, first = (
        await session.execute(
            select(func.count(), func.min(Payment.created_at)).where(Payment.user_id == user_id)
        )
    ).one()
    return int(count), first


def payment_ids_of(user_id: str) -> Select[Any]:
    """The ids of a user's payments, as a subquery for the packages above (partners'
    commissions name the payment they came from)."""
    return select(Payment.id).where(Payment.user_id == user_id)


async def has_paid(session: AsyncSession, *, user_id: str) -> bool:
    """Whether the user has paid at least once (a pack or a plan's invoice)."""
    found = await session.scalar(select(Payment.id).where(Payment.user_id == user_id).limit(1))
    return found is not None
