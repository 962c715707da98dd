"""Exception handlers: every error answer is RFC 9457 problem+json."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from levqor.db.engine import unavailable
from levqor.errors import PROBLEM_JSON, LevqorError, problem, problem_for

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LevqorError, _levqor_error)  # type: ignore[arg-type]
    for database_error in (DBAPIError, ConnectionError, TimeoutError):
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]


def _answer(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


async def _levqor_error(_request: Request, exc: LevqorError) -> JSONResponse:
    return _answer(problem_for(exc), exc.headers)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    """The database is away (down, restarting): 503 and when to try again, not a 500."""
    if not unavailable(exc):
        raise exc  # a bug, not an outage: the catch-all answers 500
    body = problem(503, "database_unavailable", "The database is not answering; try again.")
    return _answer(body, {"Retry-After": str(RETRY_AFTER_OUTAGE_S)})


RETRY_AFTER_OUTAGE_S = 2


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return _answer(problem(exc.status_code, code, detail), headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the
    first route's (GET /me and DELETE /me are two routes), so `Allow` lied."""
    routes = request.app.router.routes
    methods = {
        method
        for method in PROBED_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
               for route in routes)
    }  # fmt: skip
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


PROBED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    issues = exc.errors()
    if any(issue.get("type") == "json_invalid" for issue in issues):
        return _answer(problem(400, "invalid_json", "The request body is not valid JSON."))
    fields = [
        {
            "field": field_path(issue.get("loc", ())),
            "in": str(issue.get("loc", ("body",))[0]),
            "message": issue.get("msg", ""),
            "type": issue.get("type", ""),
        }
        for issue in issues
    ]
    summary = "; ".join(f"{item['field'] or item['in']}: {item['message']}" for item in fields)
    return _answer(
        problem(
            422,
            "invalid_request",
            summary or "Invalid request.",
            title="Invalid request",
            errors=fields,
        )
    )


def field_path(location: Sequence[Any]) -> str:
    """('body', 'steps', 2, 'params', 'url') -> 'steps[2].params.url'."""
    path = ""
    for part in list(location)[1:]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
