"""What Levqor sells: monthly plans and one-off credit packs, prices in cents.

A plan's credits arrive with each paid invoice; a pack's at once. `free` is what every
account starts on (its credits are the signup grant, LEVQOR_FREE_CREDITS).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    title: str
    price_cents: int  # per month
    credits_per_month: int


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    price_cents: int
    credits: int


FREE = "free"

PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan(FREE, "Free", 0, 0),
        Plan("starter", "Starter", 1_900, 2_000),
        Plan("pro", "Pro", 4_900, 10_000),
        Plan("business", "Business", 19_900, 50_000),
    )
}

PACKS: dict[str, Pack] = {
    pack.name: pack
    for pack in (
        Pack("credits_1k", "1,000 credits", 1_000, 1_000),
        Pack("credits_10k", "10,000 credits", 8_000, 10_000),
    )
}
