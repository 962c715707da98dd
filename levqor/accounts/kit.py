"""Values the accounts code passes around: the per-process kit and who is calling."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from levqor.accounts.coalesce import ReadCoalescer
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
    # Read requests with the same credential that wait together share one load.
    caller_reads: ReadCoalescer[KnownCaller] = field(default_factory=ReadCoalescer)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthKit:
        return cls(settings, Passwords(settings), AccessTokens(settings))

    @property
    def account_key_secret(self) -> str:
        assert self.settings.jwt_secret is not None
        return "login-failures:" + self.settings.jwt_secret.get_secret_value()


@dataclass(frozen=True)
class KnownCaller:
    """A read request's caller as one load found them: the user as column values
    (decrypted already) and how they proved who they are. Immutable, so the requests
    that shared the load can share it; each builds its own `Principal` from it."""

    user_values: dict[str, Any]
    via: Literal["jwt", "api_key"]
    scopes: frozenset[str]
    jti: str | None = None
    session_id: str | None = None
    token_expires_at: datetime | None = None
    api_key_id: str | None = None


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
