"""The HTTP surface every route shares: errors, headers, limits, health."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import assert_problem, serve_app
from tests.peers import free_port

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    csp = response.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ):
        assert directive in csp
    policy = response.headers["permissions-policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()"):
        assert feature in policy


async def test_health_says_alive_with_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "version": "0.1.0"}


async def test_ready_checks_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_ready_is_503_naming_the_database_that_failed(make_settings: Any) -> None:
    # A database server that is down: nothing listens on this loopback port.
    settings = make_settings(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/levqor", redis_url=None
    )
    async with serve_app(settings) as (c, _runtime):
        response = await c.get("/ready")
    body = assert_problem(response, 503, "not_ready")
    assert body["checks"]["database"].startswith("failed")
    assert "database" in body["detail"]


async def test_security_headers_on_json(client: httpx.AsyncClient) -> None:
    assert_security_headers(await client.get("/health"))


async def test_security_headers_on_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert_security_headers(response)


async def test_security_headers_on_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Levqor builds it and keeps it running" in response.text
    assert_security_headers(response)


async def test_hsts_preload_is_opt_in(make_settings: Any, fresh_database: None) -> None:
    settings = make_settings(hsts_preload=True)
    async with serve_app(settings) as (c, _runtime):
        response = await c.get("/health")
    assert response.headers["strict-transport-security"].endswith("; preload")


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/health")
    second = await client.get("/nope")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    echoed = await client.get("/health", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"


async def test_malformed_json_is_400_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")


async def test_wrong_types_are_422_with_field_paths(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/signup", json={"email": 5, "password": ["x"]})
    body = assert_problem(response, 422, "invalid_request")
    fields = {item["field"] for item in body["errors"]}
    assert fields == {"email", "password"}


async def test_declared_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"email": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    response = await client.post(
        "/api/v1/auth/login", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


async def test_streamed_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}'

    response = await client.post(
        "/api/v1/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.delete("/health"), 405, "method_not_allowed")


async def test_crash_is_500_problem_without_stack_trace(app: FastAPI) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals at /srv/levqor/x.py line 3")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/boom")
    body = assert_problem(response, 500, "internal_error")
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert body["detail"] == "An unexpected error occurred."
    assert_security_headers(response)
    assert response.headers["x-request-id"]


async def test_openapi_document_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/auth/signup", "/api/v1/me", "/api/v1/api-keys"} <= paths.keys()


async def test_cors_is_off_unless_configured(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_configured_origins(make_settings: Any, fresh_database: None) -> None:
    settings = make_settings(cors_origins="https://app.example")
    async with serve_app(settings) as (c, _runtime):
        allowed = await c.get("/health", headers={"Origin": "https://app.example"})
        refused = await c.get("/health", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("path", ["/metrics"])
async def test_metrics_require_token_when_set(
    make_settings: Any, fresh_database: None, path: str
) -> None:
    settings = make_settings(metrics_token="m" * 40)
    async with serve_app(settings) as (c, _runtime):
        refused = await c.get(path)
        allowed = await c.get(path, headers={"Authorization": "Bearer " + "m" * 40})
    assert_problem(refused, 401, "unauthorized")
    assert allowed.status_code == 200
    assert "levqor_ratelimited_total" in allowed.text


async def test_metrics_without_a_token_answer_this_machine_only(app: Any) -> None:
    here = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)), base_url="http://t"
    )
    elsewhere = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 5000)), base_url="http://t"
    )
    async with here, elsewhere:
        assert (await here.get("/metrics")).status_code == 200
        assert_problem(await elsewhere.get("/metrics"), 403, "forbidden")


async def test_a_serving_app_keeps_its_start_up_objects_out_of_garbage_collection(
    make_settings: Any, fresh_database: None, app: FastAPI
) -> None:
    from levqor.app import create_app

    gc.unfreeze()
    async with app.router.lifespan_context(app):  # handed a runtime: embedded, left alone
        assert gc.get_freeze_count() == 0
    own = create_app(make_settings())  # its own runtime: `serve` and `up`
    try:
        async with own.router.lifespan_context(own):
            # Full collections no longer walk the app, its routes and mappers: under load
            # each one had paused the loop for 80-120 ms.
            assert gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()
        await own.state.runtime.close()
