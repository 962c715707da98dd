"""How an HTTP answer is classified for the engine: pass, retry (when), or fail."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import httpx
import pytest

from levqor.connectors.errors import ConnectorError, RateLimitedError, RetryableError
from levqor.connectors.http import raise_for_status
from levqor.db.base import utcnow


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, request=httpx.Request("POST", "http://127.0.0.1:9/x")
    )


@pytest.mark.parametrize("status", [200, 201, 204, 302])
def test_success_and_redirect_answers_pass(status: int) -> None:
    raise_for_status(answer(status))


def test_429_is_rate_limited_with_retry_after_seconds() -> None:
    with pytest.raises(RateLimitedError) as caught:
        raise_for_status(answer(429, **{"retry-after": "7"}))
    assert caught.value.retryable
    assert caught.value.retry_after_s == 7


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(utcnow() + timedelta(seconds=30), usegmt=True)
    with pytest.raises(RateLimitedError) as caught:
        raise_for_status(answer(429, **{"retry-after": later}))
    assert caught.value.retry_after_s is not None
    assert 25 <= caught.value.retry_after_s <= 31


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_server_trouble_is_retryable(status: int) -> None:
    with pytest.raises(RetryableError):
        raise_for_status(answer(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_fail_at_once(status: int) -> None:
    with pytest.raises(ConnectorError) as caught:
        raise_for_status(answer(status))
    assert not caught.value.retryable
    assert f"HTTP {status}" in caught.value.message
