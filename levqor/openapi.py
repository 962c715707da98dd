"""The OpenAPI document, made to tell the truth about errors and authentication.

FastAPI documents each route's success and its request validation error (as JSON, in a
shape we never send). Every error Levqor answers is `application/problem+json`, and some
can happen on any route: a malformed body (400), one too large (413), invalid fields
(422), the rate limit (429), a dependency down (503), a bug (500). Routes that need a
credential can also answer 401 and 403, and routes naming an object 404. Routes add the
errors of their own domain with `errors.documented(402, 409, …)`. `build()` adds all of
these, each with the problem schema.

Which routes need a credential, and how to give one, is documented from the dependency
that checks it (marked `needs_credential`), not declared with FastAPI's `Security`
dependencies: those ran on every request, and with them FastAPI's scope bookkeeping for
the whole dependency tree, about a tenth of an authenticated GET's time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from levqor import __version__
from levqor.errors import PROBLEM_JSON

EVERYWHERE = (400, 413, 422, 429, 500, 503)
WITH_CREDENTIAL = (401, 403)
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "code": {"type": "string", "description": "Stable, for programs: `not_found`, …"},
        "errors": {
            "type": "array",
            "description": "With 422: each invalid field.",
            "items": {"type": "object"},
        },
    },
    "additionalProperties": True,
}


SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An access JWT or an API key."},
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "An API key.",
    },
}
SECURITY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
_NEEDS_CREDENTIAL = "__levqor_needs_credential__"
F = TypeVar("F", bound=Callable[..., Any])


def needs_credential(dependency: F) -> F:
    """Mark a dependency that authenticates the caller: every route depending on it is
    documented with `SECURITY_SCHEMES`, and with 401 and 403."""
    setattr(dependency, _NEEDS_CREDENTIAL, True)
    return dependency


def install(app: FastAPI) -> None:
    """Serve `build(app)` at /openapi.json (built once, on first request)."""

    def cached() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = cached  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=__version__, routes=app.routes)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _document_credentials(app, schema)
    for item in schema["paths"].values():
        for operation in item.values():
            _document_errors(operation)
    return schema


def _document_credentials(app: FastAPI, schema: dict[str, Any]) -> None:
    """`security` on every operation whose route, as included (router dependencies too),
    depends on a `needs_credential` dependency."""
    guarded = [
        route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        and route.include_in_schema
        and _guarded(route.dependant)
    ]
    if guarded:
        schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    for route in guarded:
        operations = schema["paths"][route.path_format]
        for method in route.methods or ():
            operations[method.lower()]["security"] = SECURITY


def _guarded(dependant: Dependant) -> bool:
    return any(getattr(each.call, _NEEDS_CREDENTIAL, False) for each in _tree(dependant))


def _tree(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _tree(sub)


def _document_errors(operation: dict[str, Any]) -> None:
    """`security` tells which operations need a credential (`_document_credentials`)."""
    needs_credential = bool(operation.get("security"))
    names_an_object = any(p.get("in") == "path" for p in operation.get("parameters", ()))
    statuses = set(EVERYWHERE)
    if needs_credential:
        statuses |= set(WITH_CREDENTIAL)
    if needs_credential or names_an_object:
        statuses.add(404)
    responses = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(str(status), {})
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            response["description"] = _DESCRIPTIONS.get(int(status), "Error")
            response["content"] = PROBLEM_CONTENT


_DESCRIPTIONS = {
    400: "Malformed request (the body is not JSON, or a value is refused)",
    401: "No valid credential",
    402: "Not enough credits",
    403: "The credential lacks the right (admin, write scope)",
    404: "No such object (or not yours)",
    409: "Conflicts with the object's current state",
    410: "No longer available",
    413: "Request body too large",
    422: "Invalid fields",
    429: "Rate limit exceeded (see Retry-After)",
    500: "Unexpected error",
    502: "An outside service (Stripe, the LLM) failed",
    503: "A dependency (the database, Redis) is not answering",
}
