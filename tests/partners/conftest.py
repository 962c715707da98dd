from __future__ import annotations

from typing import Any

import pytest

from levqor.config import Settings
from tests.stripe_kit import stripe_peer, stripe_settings

__all__ = ["stripe_peer"]


@pytest.fixture
def settings(make_settings: Any, fresh_database: None, stripe_peer: Any) -> Settings:
    # No hold period: commissions are payable at once, so payouts can be tested. A
    # short Stripe timeout: a test makes Stripe answer too late.
    return stripe_settings(
        make_settings,
        stripe_peer,
        partner_hold_days=0,
        partner_payout_minimum_cents=1000,
        stripe_timeout_s=1.0,
    )
