"""Accounts errors.

Unauthorized
├── InvalidCredentials   401 invalid_credentials  (keeps writes: the failure is recorded)
├── InvalidToken         401 invalid_token
└── TokenReused          401 token_reused         (keeps writes: the family is revoked)
Conflict
└── EmailTaken           409 email_taken
RateLimited
└── LoginLocked          429 login_locked
Forbidden
└── MissingScope         403 insufficient_scope
"""

from __future__ import annotations

from levqor import errors


class InvalidCredentials(errors.Unauthorized):
    """The e-mail or password is wrong."""

    code = "invalid_credentials"
    keep_writes = True


class InvalidToken(errors.Unauthorized):
    """The token is missing, malformed, expired or revoked."""

    code = "invalid_token"


class TokenReused(errors.Unauthorized):
    """This refresh token was already used; every token of this login has been revoked."""

    code = "token_reused"
    keep_writes = True


class EmailTaken(errors.Conflict):
    """An account with this e-mail already exists."""

    code = "email_taken"


class LoginLocked(errors.RateLimited):
    """Too many failed logins for this account; try again later."""

    code = "login_locked"


class MissingScope(errors.Forbidden):
    """This API key lacks the scope this request needs."""

    code = "insufficient_scope"


class ResetLinkInvalid(errors.InvalidRequest):
    """This password reset link has expired or was already used; ask for a new one."""

    code = "reset_link_invalid"
