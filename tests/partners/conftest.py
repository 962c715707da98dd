from __future__ import annotations

from typing import Any

import pytest

from levqor.config import Settings
from tests.stripe_kit import stripe_peer, stripe_settings

__all__ = ["stripe_peer"]


@pytest.fixture
def settings(make_settings: Any, fresh_database: None, stripe_peer: Any) -> Settings:
    # No hold period: commissions are payable at once, so payouts can be tested.
    return stripe_settings(
        make_settings, stripe_peer, partner_hold_days=0, partner_payout_minimum_cents=1000
    )
