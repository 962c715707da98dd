"""The pages' templates and what every page is rendered with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from levqor import __version__

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """`name` with the page's shared context: the version, who is signed in (if anyone,
    set by `web.session`) and the CSRF token its forms carry."""
    shared = {
        "version": __version__,
        "viewer": getattr(request.state, "viewer", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
    }
    response = templates.TemplateResponse(
        request, name, {**shared, **(context or {})}, status_code=status_code
    )
    _set_cookies(request, response)
    return response


def redirect(request: Request, url: str) -> RedirectResponse:
    """303 See Other (a form's answer), carrying the login cookies a handler changed."""
    response = RedirectResponse(url, status_code=303)
    _set_cookies(request, response)
    return response


def _set_cookies(request: Request, response: Response) -> None:
    pending = getattr(request.state, "cookie_changes", None)
    if pending is not None:
        pending.apply(response, request.app.state.runtime)
