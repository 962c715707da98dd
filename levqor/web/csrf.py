"""CSRF protection for the pages' forms: a double-submit token.

Every page response carries a random token in an HttpOnly, SameSite=Lax cookie (set once,
kept); every form repeats it in a hidden `csrf_token` field (htmx sends the form's fields
too). A state-changing page request whose field does not match its cookie is refused
with 403. Another site can neither read the cookie nor make the browser send a matching
field, and SameSite=Lax keeps the cookie off its cross-site POSTs anyway.
"""

from __future__ import annotations

import hmac
import secrets
from html import escape
from http.cookies import CookieError, SimpleCookie

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.errors import Forbidden
from levqor.web.rendering import render

COOKIE = "levqor_csrf"
FIELD = "csrf_token"
# The API authenticates with bearer tokens, never cookies: it needs no CSRF token.
EXEMPT_PREFIXES = ("/api/", "/hooks/", "/static/", "/health", "/ready", "/metrics")


class CsrfCookieMiddleware:
    def __init__(self, app: ASGIApp, *, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = _cookie(scope)
        fresh = token is None
        if token is None:
            token = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = token

        async def send_with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start":
                attributes = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else "")
                cookie = f"{COOKIE}={token}; {attributes}".encode()
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:  # a malformed Cookie header carries no token
                return None
            morsel = jar.get(COOKIE)
            if morsel is not None and len(morsel.value) >= 32:
                return morsel.value
    return None


class FormRefused(Forbidden):
    """A form without the token its page gave it: shown to the person as a page."""

    code = "csrf_failed"


async def verify(request: Request, csrf_token: str = Form("", max_length=200)) -> None:
    """A form dependency: the request's token must match its cookie."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), csrf_token.encode()):
        raise FormRefused(
            "This form has expired or did not come from this site; go back, reload the page "
            "and send it again."
        )


def refused_page(request: Request, exc: Exception) -> Response:
    """The handler of `FormRefused`: a page that says what to do (a fragment for htmx),
    not the API's problem+json."""
    assert isinstance(exc, FormRefused)
    if request.headers.get("hx-request") == "true":
        return HTMLResponse(
            f'<p class="error" role="alert">{escape(exc.detail)}</p>', status_code=exc.status
        )
    return render(
        request, "form_refused.html", {"detail": exc.detail, "noindex": True}, status_code=403
    )
