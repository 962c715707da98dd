"""The OpenAPI document tells the truth about errors, authentication and methods."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import assert_problem


async def test_every_error_is_documented_as_problem_json(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses: dict[str, Any] = operation["responses"]
            assert {"400", "413", "422", "429", "500", "503"} <= responses.keys(), (path, method)
            for status, response in responses.items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )


async def test_operations_needing_a_credential_say_so(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    me = paths["/api/v1/me"]["get"]
    assert me["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"401", "403", "404"} <= me["responses"].keys()
    login = paths["/api/v1/auth/login"]["post"]
    assert "security" not in login
    assert "401" in login["responses"]


async def test_method_not_allowed_lists_every_method_of_the_path(
    client: httpx.AsyncClient, signup: Any
) -> None:
    account = await signup()
    answer = await client.put("/api/v1/me", headers=account.headers)
    assert_problem(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "DELETE, GET, HEAD"


async def test_dead_letters_page_like_every_list(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    page = (await client.get("/api/v1/dead-letters", headers=account.headers)).json()
    assert page == {"data": [], "next_cursor": None}
    refused = await client.get(
        "/api/v1/jobs", params={"cursor": "not a cursor"}, headers=account.headers
    )
    assert_problem(refused, 422, "invalid_request")
