"""How a step failed, classified for the engine.

    ConnectorError            not retryable: a 4xx, a validation error, bad params
    ├── RetryableError        network trouble, 5xx, 408: retried with backoff
    └── RateLimitedError      429: retried after `retry_after_s` when the service says
    Hold                      not a failure: the run waits (held) until a pause ends

Foreign errors (httpx, SMTP, Stripe) are translated into these where they enter.
"""

from __future__ import annotations

from datetime import datetime


class ConnectorError(Exception):
    """The step failed and retrying will not help."""

    retryable = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class RetryableError(ConnectorError):
    """The step failed for a reason that may pass."""

    retryable = True


class RateLimitedError(RetryableError):
    """The service asked us to slow down."""


class Reschedule(Exception):
    """A step asks the engine to continue the run later without holding a worker."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"continue in {seconds} s")
        self.seconds = seconds


class Hold(Exception):
    """The step may not run yet for a reason outside the run (the spend guard paused LLM
    calls): the run waits, `held`, until `until` or until released sooner."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.message = message
        self.until = until


class StopRun(Exception):
    """A step ends the run successfully (a filter whose condition is false)."""
