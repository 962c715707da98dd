"""Errors every package raises, rendered as RFC 9457 problem+json.

    LevqorError
    ├── InvalidRequest        400 invalid_request
    │   └── InvalidJson       400 invalid_json
    ├── Unauthorized          401 unauthorized
    ├── PaymentRequired       402 insufficient_credits
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not_found
    ├── Conflict              409 conflict
    ├── Gone                  410 gone
    ├── PayloadTooLarge       413 payload_too_large
    ├── RateLimited           429 rate_limited
    └── ServiceUnavailable    503 service_unavailable

Domains subclass these (`accounts.errors.InvalidCredentials` is an `Unauthorized`), so one
handler registered in `create_app` renders them all. The class docstring is the default
`detail`; `code` is stable and meant for programs.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

PROBLEM_JSON = "application/problem+json"


class LevqorError(Exception):
    """Something went wrong."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    # True when the request's writes must be committed even though it fails (a failed
    # login is still recorded, a reused refresh token still revokes its family).
    keep_writes: ClassVar[bool] = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)


class InvalidRequest(LevqorError):
    """The request is not valid."""

    status = 400
    code = "invalid_request"


class InvalidJson(InvalidRequest):
    """The request body is not valid JSON."""

    code = "invalid_json"


class PaymentRequired(LevqorError):
    """Not enough credits."""

    status = 402
    code = "insufficient_credits"


class Unauthorized(LevqorError):
    """Authentication is required."""

    status = 401
    code = "unauthorized"


class Forbidden(LevqorError):
    """You are not allowed to do this."""

    status = 403
    code = "forbidden"


class NotFound(LevqorError):
    """No such object."""

    status = 404
    code = "not_found"


class Conflict(LevqorError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class Gone(LevqorError):
    """This existed once and is no longer available."""

    status = 410
    code = "gone"


class PayloadTooLarge(LevqorError):
    """The request body is too large."""

    status = 413
    code = "payload_too_large"


class RateLimited(LevqorError):
    """Too many requests; slow down."""

    status = 429
    code = "rate_limited"


class ServiceUnavailable(LevqorError):
    """A dependency is not answering."""

    status = 503
    code = "service_unavailable"


def problem(
    status: int, code: str, detail: str, *, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The body of a problem+json answer."""
    body: dict[str, Any] = {
        "type": f"https://levqor.dev/problems/{code.replace('_', '-')}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return body


def problem_for(error: LevqorError) -> dict[str, Any]:
    return problem(error.status, error.code, error.detail, **error.extra)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these errors too (besides those every
    route can); `levqor.openapi` gives each its problem+json schema and description."""
    return {status: {} for status in statuses}
