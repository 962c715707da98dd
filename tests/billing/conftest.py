from __future__ import annotations

from typing import Any

import pytest

from levqor.config import Settings
from tests.stripe_kit import stripe_peer, stripe_settings

__all__ = ["stripe_peer"]


@pytest.fixture
def settings(make_settings: Any, fresh_database: None, stripe_peer: Any) -> Settings:
    return stripe_settings(
        make_settings, stripe_peer, infra_monthly_cents=30_000, stripe_timeout_s=1.0
    )
