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
    assert {"transform", "filter", "delay", "http_request"} <= catalogue.keys()
    [request] = catalogue["http_request"]["actions"]
    assert request["name"] == "request"
    schema = request["params_schema"]
    assert schema["required"] == ["url"]
    assert "json" in schema["properties"]  # the alias users write, not the Python name
    assert schema["properties"]["method"]["enum"][:2] == ["GET", "POST"]


async def test_catalogue_needs_a_login(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/connectors"), 401, "unauthorized")
