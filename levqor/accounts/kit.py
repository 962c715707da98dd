"""Values the accounts code passes around: the per-process kit and who is calling."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from levqor.accounts.coalesce import BatchReader
from levqor.accounts.models import ROLE_ADMIN, User
from levqor.accounts.passwords import Passwords
from levqor.accounts.tokens import AccessTokens
from levqor.config import Settings


class RevokedIds:
    """Ids known to be revoked (access `jti`s and login `sid`s), remembered in-process.

    Revocation is permanent, so a remembered id can never be stale: a replayed revoked
    token is refused without a database round trip. Unknown ids are always checked in the
    database, in the same query that loads the user.
    """

    def __init__(self, max_size: int = 50_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._max_size = max_size

    def add(self, *ids: str) -> None:
        for value in ids:
            self._ids[value] = None
        while len(self._ids) > self._max_size:
            self._ids.popitem(last=False)

    def __contains__(self, value: object) -> bool:
        return value in self._ids


@dataclass
class AuthKit:
    """What the accounts service needs besides a session; built once per process."""

    settings: Settings
    passwords: Passwords
    access_tokens: AccessTokens
    revoked: RevokedIds = field(default_factory=RevokedIds)
    # The callers of read requests that wait together are loaded together.
    token_callers: BatchReader[tuple[str, str, str], TokenCaller] = field(
        default_factory=BatchReader
    )
    key_callers: BatchReader[str, KeyCaller] = field(default_factory=BatchReader)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthKit:
        return cls(settings, Passwords(settings), AccessTokens(settings))

    @property
    def account_key_secret(self) -> str:
        assert self.settings.jwt_secret is not None
        return "login-failures:" + self.settings.jwt_secret.get_secret_value()


class TokenCaller(NamedTuple):
    """An access token's user as one load found them (column values, decrypted; never
    changed, for the requests that sent the token share them), and whether the token or
    its login is revoked."""

    user_values: dict[str, Any]
    token_revoked: bool
    login_revoked: bool


class KeyCaller(NamedTuple):
    """An API key's owner as one load found them (shared as `TokenCaller`'s), and the key."""

    user_values: dict[str, Any]
    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, how they proved it, and what they may do."""

    user: User
    via: Literal["jwt", "api_key"]
    scopes: frozenset[str]
    jti: str | None = None
    session_id: str | None = None
    token_expires_at: datetime | None = None
    api_key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.role == ROLE_ADMIN
