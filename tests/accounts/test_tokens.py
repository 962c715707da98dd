"""Access-token verification, including the verified-token cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from levqor.accounts.errors import InvalidToken
from levqor.accounts.tokens import AccessTokens
from levqor.config import Settings

SETTINGS = Settings(jwt_secret="k" * 40, _env_file=None)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_round_trip_gives_the_claims() -> None:
    tokens = AccessTokens(SETTINGS)
    token, issued = tokens.issue(user_id="usr_a", session_id="fam_a", now=datetime.now(UTC))
    assert tokens.decode(token) == issued


def test_a_cached_token_still_expires() -> None:
    clock = Clock()
    tokens = AccessTokens(SETTINGS, clock=clock)
    token, claims = tokens.issue(user_id="usr_a", session_id="fam_a", now=clock.now)
    assert tokens.decode(token).sub == "usr_a"  # verified and remembered
    clock.now = claims.expires_at + timedelta(seconds=SETTINGS.jwt_leeway_s - 1)
    assert tokens.decode(token).sub == "usr_a"  # within the leeway
    clock.now = claims.expires_at + timedelta(seconds=SETTINGS.jwt_leeway_s + 1)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.decode(token)


def test_a_token_signed_with_another_key_is_never_cached_as_valid() -> None:
    other = AccessTokens(Settings(jwt_secret="z" * 40, _env_file=None))
    token, _ = other.issue(user_id="usr_a", session_id="fam_a", now=datetime.now(UTC))
    tokens = AccessTokens(SETTINGS)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            tokens.decode(token)


def test_cache_is_bounded() -> None:
    tokens = AccessTokens(SETTINGS, cache_size=3)
    issued = [
        tokens.issue(user_id=f"usr_{i}", session_id="fam", now=datetime.now(UTC))[0]
        for i in range(5)
    ]
    for token in issued:
        tokens.decode(token)
    assert len(tokens._verified) == 3
