"""Pure ASGI middleware shared by every route.

Order, outermost first (see `create_app`): RequestContext → SecurityHeaders →
CatchAll → BodyLimit → the router. Everything that adds headers sits outside CatchAll so a
500 still carries the request id and security headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.errors import PROBLEM_JSON, problem
from levqor.logging import get_logger

log = get_logger("levqor.http")
REQUEST_ID = b"x-request-id"
EXTRA_HEADERS = "levqor_extra_headers"


def add_response_headers(scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
    """Queue headers for the response, including error responses (used by rate limiting)."""
    scope.setdefault("state", {}).setdefault(EXTRA_HEADERS, []).extend(headers)


class RequestContextMiddleware:
    """Gives every response an `X-Request-ID`, adds queued headers, writes the access log."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or secrets.token_hex(12)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID, request_id.encode()))
                headers.extend(state.get(EXTRA_HEADERS, ()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if self.access_log:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    request_id=request_id,
                    user_id=state.get("user_id"),
                )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return None


class CatchAllMiddleware:
    """Turns an unhandled exception into a 500 problem+json without a stack trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("unhandled_error", request_id=scope.get("state", {}).get("request_id"))
            if started:
                raise
            body = problem(500, "internal_error", "An unexpected error occurred.")
            await send_json(send, 500, body, content_type=PROBLEM_JSON)


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, declared or streamed.

    The rest of the body is read (and dropped) before answering, up to `DRAIN_BYTES`
    and `DRAIN_S`: a server that answers and closes while the client is still sending
    makes the kernel reset the connection, and the client never reads its 413.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _drain(receive)
            await send_json(send, 413, self._problem(), content_type=PROBLEM_JSON)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive)
                    # FastAPI passes HTTPException through body parsing untouched.
                    raise HTTPException(413, self._problem()["detail"])
            return message

        await self.app(scope, counting_receive, send)

    def _problem(self) -> dict[str, Any]:
        return problem(
            413, "payload_too_large", f"The request body exceeds {self.max_bytes} bytes."
        )


DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_S = 10.0


async def _drain(receive: Receive) -> None:
    """Read what is left of the request body, bounded in bytes and time."""
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            while drained <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_json(
    send: Send, status: int, body: Any, *, content_type: str = "application/json"
) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
