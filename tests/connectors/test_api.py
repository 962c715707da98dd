"""The connector catalogue a workflow author (or the AI planner) reads."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import assert_problem


async def test_catalogue_lists_actions_with_params_schemas(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    response = await client.get("/api/v1/connectors", headers=account.headers)
    assert response.status_code == 200
    catalogue = {item["name"]: item for item in response.json()}
    assert sorted(catalogue) == [
        "airtable",
        "delay",
        "discord",
        "email",
        "filter",
        "github",
        "google_sheets",
        "http_request",
        "llm",
        "notion",
        "slack",
        "stripe",
        "telegram",
        "transform",
        "webhook",
    ]
    assert catalogue["slack"]["credential_fields"] == ["webhook_url", "bot_token"]
    assert [a["name"] for a in catalogue["stripe"]["actions"]] == [
        "find_customer",
        "create_payment_link",
    ]
    [request] = catalogue["http_request"]["actions"]
    assert request["name"] == "request"
    schema = request["params_schema"]
    assert schema["required"] == ["url"]
    assert "json" in schema["properties"]  # the alias users write, not the Python name
    assert schema["properties"]["method"]["enum"][:2] == ["GET", "POST"]


async def test_catalogue_needs_a_login(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/connectors"), 401, "unauthorized")
