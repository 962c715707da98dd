"""Logs are JSON and never carry a password, token or key."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
import structlog

from levqor.logging import configure_logging, get_logger, redact
from tests.conftest import PASSWORD


def test_redact_masks_secret_keys_at_any_depth() -> None:
    event = {
        "event": "x",
        "password": "p",
        "nested": {"api_key": "k", "Authorization": "Bearer t", "ok": 1},
        "items": [{"refresh_token": "r"}],
    }
    assert redact(event) == {
        "event": "x",
        "password": "[redacted]",
        "nested": {"api_key": "[redacted]", "Authorization": "[redacted]", "ok": 1},
        "items": [{"refresh_token": "[redacted]"}],
    }


@pytest.fixture
def log_stream() -> Any:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_auth_flow_logs_no_secrets(
    client: httpx.AsyncClient, signup: Any, log_stream: io.StringIO
) -> None:
    account = await signup()
    login = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    await client.post("/api/v1/auth/login", json={"email": account.email, "password": "wrong-one"})
    key = await client.post("/api/v1/api-keys", json={"name": "k"}, headers=account.headers)
    get_logger("test").info("careless", password=PASSWORD, token=account.access_token)
    output = log_stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert any(line["event"] == "careless" for line in lines)
    for secret in (
        PASSWORD,
        account.access_token,
        account.refresh_token,
        login.json()["refresh_token"],
        key.json()["key"],
    ):
        assert secret not in output
